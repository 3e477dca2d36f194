"""Run a .tflite in the TFLite Micro Python interpreter (``tflite-micro``, an optional extra: ``edgeq[tflm]``, Linux
x86_64 wheels only; a missing one is a one-line error naming the extra). It runs TFLite Micro's reference kernels,
one sample per call; inputs and outputs are lists of arrays in the model's input/output order.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import EdgeqError, ExecutionError
from edgeq.tflite_format.flatbuffer import Graph, read


def tflm_interpreter(model_bytes: bytes, arena_size: int):
    try:
        from tflite_micro import runtime
    except ImportError:
        raise EdgeqError("running TFLite Micro needs its interpreter: pip install 'edgeq[tflm]' (Linux x86_64)") from None
    try:
        return runtime.Interpreter.from_bytes(model_bytes, arena_size=int(arena_size))
    except (RuntimeError, ValueError) as exc:
        raise ExecutionError(f"TFLite Micro cannot load the model: {str(exc).strip().splitlines()[0]}") from None


def default_arena_size(model: bytes | Graph) -> int:
    """A generous arena for a run whose exact arena is not needed: every non-constant tensor at once, plus slack."""
    graph = read(model) if isinstance(model, bytes) else model
    activations = sum(
        int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize for t in graph.tensors if not t.is_constant
    )
    # TRANSPOSE_CONV accumulates its whole output in an int32 scratch buffer (4 bytes per output element)
    transposed = [op.outputs[0] for op in graph.operators if op.opcode == "TRANSPOSE_CONV"]
    scratch = max((4 * int(np.prod(graph.tensors[i].shape)) for i in transposed), default=0)
    return 2 * activations + scratch + 64 * 1024 + 512 * len(graph.tensors)


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
