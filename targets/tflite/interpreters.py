"""Run a .tflite in the real interpreters: LiteRT (ai-edge-litert) and the TFLite Micro Python interpreter.

Both are optional extras (``edgeq[litert]``, ``edgeq[tflm]``); a missing one is a one-line error naming the extra.
Inputs and outputs are lists of arrays in the model's input/output order, one sample per call for TFLM and any batch
that matches the model for LiteRT.

Kernel choices for LiteRT (docs/runtimes.md §3.2): "reference" (BUILTIN_REF, bit-exact with TFLM and edgeq's
integer reference), "optimized" (BUILTIN_WITHOUT_DEFAULT_DELEGATES: the CPU kernels without XNNPACK) and "default"
(XNNPACK, what a CPU deployment computes and the fast path).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.tflite_format.flatbuffer import Graph, read

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
        raise EdgeqError(f"LiteRT cannot load the model: {str(exc).strip().splitlines()[0]}") from None
    return interpreter


def run_litert(model_bytes: bytes, inputs: list[np.ndarray], *, kernels: str = "reference", threads: int = 1):
    """Outputs of one invocation in LiteRT; each input must have the model's exact shape and dtype."""
    interpreter = litert_interpreter(model_bytes, kernels=kernels, threads=threads)
    return invoke_litert(interpreter, inputs)


def invoke_litert(interpreter, inputs: list[np.ndarray]) -> list[np.ndarray]:
    for detail, array in zip(interpreter.get_input_details(), inputs, strict=True):
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(array))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def tflm_interpreter(model_bytes: bytes, arena_size: int):
    try:
        from tflite_micro import runtime
    except ImportError:
        raise EdgeqError("running TFLite Micro needs its interpreter: pip install 'edgeq[tflm]' (Linux x86_64)") from None
    try:
        return runtime.Interpreter.from_bytes(model_bytes, arena_size=int(arena_size))
    except (RuntimeError, ValueError) as exc:
        raise EdgeqError(f"TFLite Micro cannot load the model: {str(exc).strip().splitlines()[0]}") from None


def default_arena_size(model: bytes | Graph) -> int:
    """A generous arena for a run whose exact arena is not needed: every non-constant tensor at once, plus slack."""
    graph = read(model) if isinstance(model, bytes) else model
    activations = sum(
        int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize for t in graph.tensors if not t.is_constant
    )
    return 2 * activations + 64 * 1024 + 512 * len(graph.tensors)


def run_tflm(model_bytes: bytes, inputs: list[np.ndarray], *, arena_size: int | None = None) -> list[np.ndarray]:
    """Outputs of one invocation in the TFLite Micro interpreter (reference kernels)."""
    graph = read(model_bytes)
    interpreter = tflm_interpreter(model_bytes, arena_size or default_arena_size(graph))
    return invoke_tflm(interpreter, inputs, len(graph.outputs))


def invoke_tflm(interpreter, inputs: list[np.ndarray], num_outputs: int) -> list[np.ndarray]:
    for i, array in enumerate(inputs):
        interpreter.set_input(np.ascontiguousarray(array), i)
    interpreter.invoke()
    return [np.array(interpreter.get_output(i), copy=True) for i in range(num_outputs)]
