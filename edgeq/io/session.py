"""ONNX Runtime sessions, made in one place, and the helpers that run a model in them on data.

``session`` is the only caller of ``onnxruntime.InferenceSession`` in edgeq: every float model, QDQ model and
artifact runs on the CPU execution provider with the options given here, and a model onnxruntime refuses becomes
one ``ExecutionError`` line. Options:

* ``threads``: ``intra_op_num_threads`` (one inter-op thread: edgeq's graphs run sequentially); None keeps
  onnxruntime's default, one thread per core (one inside a Ray task: edgeq.scale.task_threads);
* ``optimization``: "disabled", "basic" (constant folding and no-op removal only; onnxruntime never fuses away a
  node whose output is a graph output, so exposed intermediate tensors keep their values) or "all" (every fusion:
  what a deployment runs, QDQ units become integer kernels);
* ``optimized_model_path``: where onnxruntime writes the graph it actually runs (what it fused);
* ``disabled_optimizers``: names of onnxruntime graph transformers not to run (e.g. "ConvBNFusion");
* ``profile_prefix``: turns on onnxruntime's profiler, which writes a Chrome-trace JSON at that prefix;
* ``exact_int8``: onnxruntime's exact int8 kernels on x86 without VNNI (default; False: its saturating ones). On
  CPUs whose default kernels are exact (VNNI, ARM64: edgeq.io.host) the setting is not made: it would select
  slower kernels (MobileNetV2's QDQ model ran at 8.2 ms instead of 3.6 ms on an AVX-512 VNNI Xeon);
* ``memory_arena``: onnxruntime's CPU memory arena (off for the exposing sessions, whose tensors are all outputs).

Log messages below errors are silenced: onnxruntime warns about initializers a pruned or exposing copy no longer
reads, which is expected there and noise to a user.

The other helpers run a model on data: ``exposing_copy`` (intermediate tensors as extra graph outputs, the user's
model untouched), ``fixed_batch_size``/``budget_batch`` (how many samples one run takes) and ``run_batches``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from edgeq.data import CalibrationData
from edgeq.errors import DataError, ExecutionError, first_line
from edgeq.io.host import this_cpu_exact_int8
from edgeq.io.onnx_model import to_proto
from edgeq.scale.tasks import task_threads

PROVIDERS = ["CPUExecutionProvider"]
X64_QUANT_PRECISION = "session.x64quantprecision"
OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# What onnxruntime raises when a model fails to load or run (its exception types are not exported elsewhere).
ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)
MAX_BATCH = 32
_UNKNOWN_DIM = 64  # a dimension shape inference left unknown, when sizing a batch


def session(
    model: str | os.PathLike | bytes | onnx.ModelProto | ir.Model,
    *,
    threads: int | None = None,
    optimization: str = "all",
    optimized_model_path: str | os.PathLike | None = None,
    disabled_optimizers: Sequence[str] = (),
    profile_prefix: str | os.PathLike | None = None,
    what: str | None = None,
    exact_int8: bool = True,
    memory_arena: bool = True,
) -> ort.InferenceSession:
    """An onnxruntime CPU session for MODEL (a file, serialized bytes, a ModelProto or an onnx_ir model).

    WHAT names the model in the error message (default: the file name, or "the model").
    """
    if isinstance(model, ir.Model):
        source = to_proto(model).SerializeToString()
    elif isinstance(model, onnx.ModelProto):
        source = model.SerializeToString()
    elif isinstance(model, bytes):
        source = model
    else:
        source = str(model)
        what = what or str(model)
    disabled = list(disabled_optimizers) or None
    # On x86 CPUs with AVX2 but no VNNI (AMD Zen 1-3, Intel before Cascade Lake) onnxruntime's default int8 kernels
    # add pairs of u8 x s8 products in int16 (VPMADDUBSW), which saturates: MobileNetV2's QDQ model fell to 7.7 dB
    # output SQNR there. The entry "1" selects its exact kernels (docs/runtimes.md). onnxruntime 1.32's exact AVX2
    # kernels fail to load some models ("Attempt to replace the existing tensor": PP-OCRv4 rec): those run with
    # the default kernels, as does EXACT_INT8=False (what a deployment without the entry gets).
    # The first of two tries logs nothing: its failure is expected on those models, and handled.
    settings = [("1", 4), ("0", 3)] if exact_int8 and not this_cpu_exact_int8() else [("0", 3)]
    for precision, log_severity in settings:
        options = _options(optimization, threads, optimized_model_path, profile_prefix, memory_arena, log_severity)
        options.add_session_config_entry(X64_QUANT_PRECISION, precision)
        try:
            return ort.InferenceSession(source, options, providers=PROVIDERS, disabled_optimizers=disabled)
        except Exception as exc:  # onnxruntime raises its own exception types, and plain ones for bad paths
            error = exc
    raise ExecutionError(f"onnxruntime cannot load {what or 'the model'}: {first_line(error)}") from None


def _options(
    optimization: str,
    threads: int | None,
    optimized_model_path: str | os.PathLike | None,
    profile_prefix: str | os.PathLike | None,
    memory_arena: bool,
    log_severity: int,
) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    options.log_severity_level = log_severity
    options.enable_cpu_mem_arena = memory_arena
    threads = threads or task_threads()  # one per Ray task (edgeq.scale): N tasks on N cores, not N x N threads
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return options


def _runtime_values(model: ir.Model) -> dict[str, ir.Value]:
    """Graph inputs (not initializers) and node outputs of the main graph, by name."""
    values = {v.name: v for v in model.graph.inputs if not v.is_initializer()}
    values.update((v.name, v) for node in model.graph for v in node.outputs if v.name)
    return values


def runtime_values(model: ir.Model, names: Sequence[str]) -> dict[str, ir.Value]:
    """The graph inputs and node outputs of MODEL called NAMES; ValueError names the ones it lacks."""
    values = _runtime_values(model)
    unknown = [name for name in names if name not in values]
    if unknown:
        raise ValueError(f"not graph inputs or node outputs of the model: {', '.join(unknown)}")
    return {name: values[name] for name in names}


def exposing_copy(model: ir.Model, values: Sequence[ir.Value]) -> onnx.ModelProto:
    """A copy of MODEL with VALUES (node outputs) added to the graph outputs, typed where the type is known."""
    proto = to_proto(model)
    existing = {o.name for o in proto.graph.output}
    for value in values:
        if value.name in existing:
            continue
        if value.dtype is None:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(value.name))
        else:  # typed, shape left to onnxruntime's inference
            proto.graph.output.append(onnx.helper.make_tensor_value_info(value.name, value.dtype.value, None))
    return proto


def exposing(proto: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    """An unoptimized session of a copy of PROTO with NAMES added to its outputs (every value as computed)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    existing = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in existing)
    # Without the arena: every exposed tensor is an output, so the arena cannot reuse their memory and grows in
    # power-of-two extensions to the sum of them (MobileNetV2's convert --target all: 660 -> 560 MB peak).
    return session(proto, optimization="disabled", memory_arena=False)


def fixed_batch_size(model: ir.Model) -> int | None:
    """The batch dimension of the model's inputs when it is fixed, else None."""
    dims = [
        v.shape[0]
        for v in model.graph.inputs
        if not v.is_initializer() and v.shape is not None and len(v.shape) > 0
    ]
    fixed = {d for d in dims if isinstance(d, int)}
    if len(fixed) > 1:
        raise DataError(f"the model's inputs have different fixed batch sizes {sorted(fixed)}")
    return fixed.pop() if fixed else None


def bytes_per_sample(values: Sequence[ir.Value]) -> int:
    """Bytes of VALUES for one sample, from their inferred shapes (axis 0 is the batch)."""
    total = 0
    for value in values:
        dims = list(value.shape or ())[1:] if value.shape is not None else [_UNKNOWN_DIM]
        itemsize = value.dtype.itemsize if value.dtype is not None else 4
        total += itemsize * math.prod(d if isinstance(d, int) else _UNKNOWN_DIM for d in dims)
    return math.ceil(total)


def budget_batch(model: ir.Model, memory_budget_mb: int) -> int:
    """As many samples as fit MEMORY_BUDGET_MB, counting every node output of MODEL once, in [1, MAX_BATCH]."""
    per_sample = max(1, bytes_per_sample([v for node in model.graph for v in node.outputs]))
    return int(np.clip(memory_budget_mb * 2**20 // per_sample, 1, MAX_BATCH))


def fixed_batch_error(fixed: int, samples: int) -> DataError:
    return DataError(
        f"the model's batch dimension is fixed to {fixed} and the data has {samples} samples: give a "
        f"multiple of {fixed} (or export the model with a dynamic batch)"
    )


def session_batch(runner: ort.InferenceSession) -> int | None:
    """The batch dimension RUNNER's inputs fix (preprocessing fixes it to 1 where the graph reads shapes), or None."""
    fixed = {i.shape[0] for i in runner.get_inputs() if i.shape and isinstance(i.shape[0], int)}
    return min(fixed) if fixed else None


def run_in_chunks(runner: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """RUNNER's outputs NAMES for batch-first FEEDS, run in pieces of the batch it fixes where it fixes one."""
    samples = len(next(iter(feeds.values())))
    step = session_batch(runner) or samples
    if step >= samples:
        return runner.run(names, feeds)
    parts = [runner.run(names, {k: v[s : s + step] for k, v in feeds.items()}) for s in range(0, samples, step)]
    return [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]


def run_batches(
    runner: ort.InferenceSession, names: list[str], data: CalibrationData, batch_size: int
) -> Iterator[tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    """Yield (batch, outputs NAMES) over DATA in batches the model accepts: BATCH_SIZE samples, or exactly the
    model's batch dimension where that is fixed."""
    fixed = session_batch(runner)
    size = fixed or batch_size
    seen = 0
    for batch in data.batches(size):
        seen += next(iter(batch.values())).shape[0]
        if fixed and next(iter(batch.values())).shape[0] != size:
            raise fixed_batch_error(size, seen)
        yield batch, runner.run(names, batch)


ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(bool)": np.bool_,
}


def random_inputs(runner: ort.InferenceSession, seed: int = 0, symbolic: int = 1) -> dict[str, np.ndarray]:
    """Standard-normal floats or small integers for every input; symbolic dimensions become SYMBOLIC."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in runner.get_inputs():
        shape = [d if isinstance(d, int) else symbolic for d in spec.shape]
        dtype = np.dtype(ORT_TYPES.get(spec.type, np.float32))
        values = rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 10, shape)
        feeds[spec.name] = values.astype(dtype)
    return feeds
