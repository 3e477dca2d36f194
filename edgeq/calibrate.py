"""Run the float model in onnxruntime and collect statistics of the tensors that will be quantized.

A copy of the model exposes every requested intermediate tensor as a graph output; one InferenceSession
(basic graph optimizations only, which fold constants but never fuse a node whose output we read) runs the
data in batches; each batch's tensors update their streaming observers and are then dropped. Peak memory is
the model plus one batch of intermediate tensors, whatever the number of samples.

Batch size: when the input's batch dimension is symbolic, as many samples as fit MEMORY_BUDGET_MB of exposed
tensors (from the inferred per-sample sizes), between 1 and 32; when it is fixed, that size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx
import onnx_ir as ir
import onnxruntime as ort
from tqdm import tqdm

from edgeq.data import CalibrationData
from edgeq.errors import EdgeqError
from edgeq.modelio import to_proto
from edgeq.observers import TensorObserver

MAX_BATCH = 32


def _exposing_copy(model: ir.Model, names: Sequence[str]) -> onnx.ModelProto:
    proto = to_proto(model)
    existing = {o.name for o in proto.graph.output}
    for name in names:
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return proto


def _bytes_per_sample(model: ir.Model, names: set[str]) -> int:
    """Bytes of the exposed tensors for one sample (unknown dims count as 64)."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    total = 0
    for name in names:
        value = values.get(name)
        dims = list(value.shape or ()) if value is not None else []
        elements = math.prod(d if isinstance(d, int) else 64 for d in dims[1:]) if dims else 1
        total += 4 * elements
    return total


def _batch_size(model: ir.Model, names: set[str], memory_budget_mb: int) -> int:
    fixed = [
        v.shape[0]
        for v in model.graph.inputs
        if not v.is_initializer() and v.shape is not None and len(v.shape) and isinstance(v.shape[0], int)
    ]
    if fixed:
        return fixed[0]
    per_sample = max(1, _bytes_per_sample(model, names))
    return max(1, min(MAX_BATCH, memory_budget_mb * 2**20 // per_sample))


def collect(
    model: ir.Model,
    tensor_names: Sequence[str],
    data: CalibrationData,
    *,
    histogram: bool = True,
    batch_size: int | None = None,
    memory_budget_mb: int = 64,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, TensorObserver]:
    """Observers for TENSOR_NAMES after running MODEL (unchanged) on all of DATA."""
    names = list(dict.fromkeys(tensor_names))
    observers = {name: TensorObserver(histogram=histogram) for name in names}
    if not names:
        return observers
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        _exposing_copy(model, names).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    output_names = [o.name for o in session.get_outputs()]
    wanted = [(i, name) for i, name in enumerate(output_names) if name in observers]
    size = batch_size or _batch_size(model, set(names), memory_budget_mb)
    with tqdm(
        total=data.num_samples,
        desc="calibrating",
        unit="sample",
        disable=None if progress else True,
        leave=False,
    ) as bar:
        for batch in data.batches(size):
            try:
                outputs = session.run(output_names, batch)
            except (
                ort.capi.onnxruntime_pybind11_state.Fail,
                ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ) as exc:
                first = str(exc).strip().splitlines()[0]
                raise EdgeqError(f"the float model failed on the calibration data: {first}") from None
            for index, name in wanted:
                observers[name].update(outputs[index])
            del outputs
            bar.update(next(iter(batch.values())).shape[0])
    return observers
