"""Run a .tflite in LiteRT (ai-edge-litert), an optional extra (``edgeq[litert]``): a missing one is a one-line error
naming the extra. Inputs and outputs are lists of arrays in the model's input/output order, any batch that matches
the model. (TFLite Micro's interpreter is the TFLite Micro target's: targets/tflm/interpreter.py.)

Kernel choices for LiteRT (docs/runtimes.md §3.2): "reference" (BUILTIN_REF, bit-exact with TFLM and edgeq's
integer reference), "optimized" (BUILTIN_WITHOUT_DEFAULT_DELEGATES: the CPU kernels without XNNPACK) and "default"
(XNNPACK, what a CPU deployment computes and the fast path).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import EdgeqError, ExecutionError

LITERT_KERNELS = ("default", "optimized", "reference")


def litert_interpreter(
    model_bytes: bytes, *, kernels: str = "default", threads: int = 1, preserve_all_tensors: bool = False
):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise EdgeqError("running .tflite needs LiteRT: pip install 'edgeq[litert]'") from None
    resolver = {
        "reference": OpResolverType.BUILTIN_REF,
        "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "default": OpResolverType.AUTO,
    }[kernels]
    try:
        interpreter = Interpreter(
            model_content=model_bytes,
            num_threads=threads,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=preserve_all_tensors,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExecutionError(f"LiteRT cannot load the model: {str(exc).strip().splitlines()[0]}") from None
    return interpreter


def flatbuffer_refusal(model_bytes: bytes) -> str | None:
    """Why LiteRT's flatbuffer verifier (run when an Interpreter is built, before any kernel sees the model) rejects
    MODEL_BYTES, or None; None too without LiteRT installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    try:
        Interpreter(model_content=model_bytes)
    except (ValueError, RuntimeError) as exc:
        return str(exc).strip().splitlines()[0]
    return None


def run_litert(model_bytes: bytes, inputs: list[np.ndarray], *, kernels: str = "reference", threads: int = 1):
    """Outputs of one invocation in LiteRT; each input must have the model's exact shape and dtype."""
    interpreter = litert_interpreter(model_bytes, kernels=kernels, threads=threads)
    return invoke_litert(interpreter, inputs)


def invoke_litert(interpreter, inputs: list[np.ndarray]) -> list[np.ndarray]:
    for detail, array in zip(interpreter.get_input_details(), inputs, strict=True):
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(array))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]
