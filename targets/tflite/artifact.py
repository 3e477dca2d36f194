"""TFLite artifacts: emit, validate on data, profile (see the package docstring for the other modules).

* ``emit``: lowers the QDQ model (lower.py), serializes it (edgeq.tflite_format.flatbuffer), checks every file rule the
  runtimes rely on (validate.py) and writes ``<name>.tflite`` atomically; with ``float_model=True`` also
  ``<name>.float.tflite``, the same graph in float32 for speed comparisons.
* ``validate_on_data``: runs the .tflite in LiteRT's default kernels (what a CPU deployment computes) on the evaluation
  data against the float ONNX model (SQNR, top-1 agreement, accuracy), and checks bit-exactness on the first
  samples: edgeq's integer reference, LiteRT with reference kernels and TFLite Micro must give identical integers.
* ``profile``: latency in LiteRT with default kernels (XNNPACK), without default delegates (the builtin CPU
  kernels) and with reference kernels (BUILTIN_REF, what TFLite Micro's kernels compute), each at every
  requested thread count; the latency rows (warm-up, timed ``invoke`` calls, percentiles, spread) are those of
  edgeq.measure.latency, whose docstring defines them. LiteRT's Python interpreter returns no per-op timings, so there
  is no per-op breakdown here; edgeq.reports.analysis gives the MACs per layer. ``runner`` hands one configuration to
  ``edgeq.measure.latency.alternate`` for A/B ratios against another artifact.

Inputs arrive in the ONNX layout (NCHW) as floats; :func:`model_inputs` lays them out NHWC and quantizes them the
way TFLite's reference QUANTIZE does (round half away from zero), and :func:`float_outputs` turns the model's
outputs back into dequantized ONNX-layout arrays.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from edgeq.data.sources import CalibrationData
from edgeq.errors import EdgeqError
from edgeq.io.files import write_bytes_atomic
from edgeq.io.session import session
from edgeq.measure.latency import (
    Run,
    format_latency_table,
    latency_stats,
    progress_bar,
    thread_counts,
    timed_runs,
)
from edgeq.measure.metrics import ErrorSums, accuracy
from edgeq.reference.arithmetic import round_half_away
from edgeq.reference.executor import run_all_semantics
from edgeq.targets.tflite.interpreters import (
    LITERT_KERNELS,
    default_arena_size,
    invoke_litert,
    invoke_tflm,
    litert_interpreter,
    tflm_interpreter,
)
from edgeq.targets.tflite.lower import lower
from edgeq.tflite_format.flatbuffer import Graph, Tensor, read, write


def emit(qdq_model, outdir: Path, name: str, *, io: str = "int8", float_model: bool = False) -> dict:
    """Write ``<name>.tflite`` (and ``<name>.float.tflite``); returns what was written and how it is laid out."""
    from edgeq.targets.tflite.validate import check_model

    lowered = lower(qdq_model, io=io)
    model_bytes = write(lowered.graph)
    check_model(model_bytes)
    path = Path(outdir) / f"{name}.tflite"
    write_bytes_atomic(path, model_bytes)
    artifacts = [path]
    if float_model:
        float_bytes = write(lower(qdq_model, precision="float").graph)
        check_model(float_bytes)
        write_bytes_atomic(Path(outdir) / f"{name}.float.tflite", float_bytes)
        artifacts.append(Path(outdir) / f"{name}.float.tflite")
    graph = lowered.graph
    return {
        "artifacts": artifacts,
        "bytes": model_bytes,
        "size_bytes": len(model_bytes),
        "io": io,
        "ops": lowered.ops,
        "inputs": [_describe(graph.tensors[i], layout) for i, layout in zip(graph.inputs, lowered.input_layouts, strict=True)],
        "outputs": [
            _describe(graph.tensors[i], layout) for i, layout in zip(graph.outputs, lowered.output_layouts, strict=True)
        ],
    }


def _describe(tensor: Tensor, layout: str) -> dict:
    row = {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype.name, "layout": layout}
    if tensor.quantization is not None:
        row["scale"] = float(tensor.quantization.scale[0])
        row["zero_point"] = int(tensor.quantization.zero_point[0])
    return row


# ----------------------------------------------------------------------------------------- inputs/outputs


def _to_tflite_layout(array: np.ndarray, tensor: Tensor) -> np.ndarray:
    """An ONNX-layout batch for TENSOR: rank-4 inputs given as NCHW are moved to the model's NHWC (every rank-4
    activation of an edgeq .tflite is NHWC). Data already laid out NHWC is accepted where the shape says so: a
    shape that fits both layouts (C = H = W) is taken as NCHW, the documented layout."""
    if array.ndim == 4:
        moved = array.transpose(0, 2, 3, 1)
        if moved.shape[1:] == tensor.shape[1:]:
            return moved
    if array.shape[1:] != tensor.shape[1:]:
        raise EdgeqError(
            f"input {tensor.name}: the .tflite wants [N, {', '.join(map(str, tensor.shape[1:]))}], "
            f"the data has {list(array.shape)}"
        )
    return array


def model_inputs(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's input arrays (batch first) for float FEEDS keyed by input name (or in input order)."""
    arrays = []
    values = list(feeds.values())
    for position, index in enumerate(graph.inputs):
        tensor = graph.tensors[index]
        array = feeds.get(tensor.name, values[position] if position < len(values) else None)
        if array is None:
            raise EdgeqError(f"no data for the model's input {tensor.name}")
        array = _to_tflite_layout(np.asarray(array), tensor)
        if tensor.dtype == np.float32:
            arrays.append(array.astype(np.float32))
            continue
        arrays.append(quantized(tensor, array))
    return arrays


def quantized(tensor: Tensor, real: np.ndarray) -> np.ndarray:
    """REAL (in TENSOR's layout) quantized with TENSOR's encoding as TFLite's QUANTIZE does: float32 division,
    rounded half away from zero, saturated."""
    q = tensor.quantization
    info = np.iinfo(tensor.dtype)
    scaled = round_half_away(np.asarray(real, np.float32) / np.float32(q.scale[0]))
    return np.clip(scaled + q.zero_point[0], info.min, info.max).astype(tensor.dtype)


def float_outputs(graph: Graph, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Dequantized outputs in the ONNX layout (NHWC rank-4 outputs back to NCHW)."""
    return [dequantized(graph, index, array) for index, array in zip(graph.outputs, outputs, strict=True)]


def dequantized(graph: Graph, index: int, array: np.ndarray) -> np.ndarray:
    """The real values of tensor INDEX in the ONNX layout."""
    tensor = graph.tensors[index]
    real = np.asarray(array, np.float32)
    if tensor.quantization is not None and tensor.dtype != np.float32:
        q = tensor.quantization
        real = (array.astype(np.float32) - np.float32(q.zero_point[0])) * np.float32(q.scale[0])
    return real.transpose(0, 3, 1, 2) if real.ndim == 4 else real


def _samples(data: CalibrationData, input_names: list[str]):
    """One float feed dict per sample (TFLite graphs are built for a batch of one)."""
    for batch in data.batches(16):
        count = len(next(iter(batch.values())))
        for i in range(count):
            yield {name: batch[name][i : i + 1] for name in input_names if name in batch}


# ----------------------------------------------------------------------------------------------- validate


def bit_exactness(model_bytes: bytes, inputs: list[list[np.ndarray]]) -> dict:
    """Mismatching output elements of TFLite Micro and LiteRT's reference kernels against edgeq's reference.

    TFLite Micro is checked against the reference's default ("tflite-micro") semantics, LiteRT BUILTIN_REF against
    its "litert" semantics (its FULLY_CONNECTED rounds once); ``litert_vs_tflite_micro`` counts where the two
    runtimes themselves differ.
    """
    graph = read(model_bytes)
    expected, expected_litert = [], []
    for sample in inputs:  # one sample at a time keeps the reference's temporaries small
        by_semantics = run_all_semantics(graph, sample)
        expected.append(by_semantics["tflite-micro"])
        expected_litert.append(by_semantics["litert"])
    expected = [np.concatenate(parts) for parts in zip(*expected, strict=True)]
    expected_litert = [np.concatenate(parts) for parts in zip(*expected_litert, strict=True)]

    def mismatches(got: list[np.ndarray], want: list[np.ndarray]) -> dict:
        diffs = [np.abs(g.astype(np.float64) - w.astype(np.float64)) for g, w in zip(got, want, strict=True)]
        return {
            "mismatches": int(sum(np.count_nonzero(d) for d in diffs)),
            "max_abs_diff": float(max(float(d.max()) for d in diffs)),  # integer steps unless the io is float
        }

    def stacked(outputs_per_sample):
        return [np.concatenate(parts) for parts in zip(*outputs_per_sample, strict=True)]

    interpreter = litert_interpreter(model_bytes, kernels="reference")
    litert = stacked(invoke_litert(interpreter, sample) for sample in inputs)
    result = {
        "samples": len(inputs),
        "elements": int(sum(e.size for e in expected)),
        "litert_reference": mismatches(litert, expected_litert),
        "litert_vs_tflite_micro": mismatches(litert, expected),
    }
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        result["tflite_micro"] = "not installed (pip install 'edgeq[tflm]', Linux x86_64)"
        return result
    micro = tflm_interpreter(model_bytes, default_arena_size(graph))
    result["tflite_micro"] = mismatches(
        stacked(invoke_tflm(micro, sample, len(graph.outputs)) for sample in inputs), expected
    )
    return result


def validate_on_data(
    float_model: str | Path,
    model_bytes: bytes,
    data: CalibrationData,
    *,
    labels: np.ndarray | None = None,
    verify_samples: int = 4,
    quantized_onnx: str | Path | None = None,
) -> dict:
    """Run the .tflite (LiteRT default kernels) against the float ONNX model on DATA; check bit-exactness."""
    graph = read(model_bytes)
    reference = session(Path(float_model))
    qdq_session = session(Path(quantized_onnx)) if quantized_onnx else None
    input_names = [i.name for i in reference.get_inputs()]
    output_names = [o.name for o in reference.get_outputs()]
    if len(output_names) != len(graph.outputs):
        raise EdgeqError(f"the float model has {len(output_names)} outputs, the .tflite {len(graph.outputs)}")
    interpreter = litert_interpreter(model_bytes, kernels="default")
    sums = {name: ErrorSums() for name in output_names}
    vs_onnx = {name: ErrorSums() for name in output_names}
    scores: dict[str, list[np.ndarray]] = {"float": [], "quantized": []}
    verify_inputs = []
    for feeds in _samples(data, input_names):
        inputs = model_inputs(graph, feeds)
        if len(verify_inputs) < verify_samples:
            verify_inputs.append(inputs)
        test = float_outputs(graph, invoke_litert(interpreter, inputs))
        ref = reference.run(output_names, feeds)
        for name, r, t in zip(output_names, ref, test, strict=True):
            sums[name].add(r, t)
        if qdq_session is not None:
            for name, q, t in zip(output_names, qdq_session.run(output_names, feeds), test, strict=True):
                vs_onnx[name].add(q, t)
        scores["float"].append(ref[0])
        scores["quantized"].append(test[0])
    result = {
        "samples": sum(len(s) for s in scores["float"]),
        "kernels": "LiteRT default (XNNPACK)",
        "outputs": {name: s.to_dict() for name, s in sums.items()},
    }
    if qdq_session is not None:
        result["against_qdq_onnx"] = {name: s.to_dict() for name, s in vs_onnx.items()}
    if labels is not None:
        labels = np.asarray(labels)[: result["samples"]]
        result["accuracy"] = {kind: accuracy(np.concatenate(s), labels) for kind, s in scores.items()}
    if verify_inputs and any(t.dtype == np.int8 for t in graph.tensors):  # a float .tflite has no oracle
        result["bit_exact"] = bit_exactness(model_bytes, verify_inputs)
    return result


# ------------------------------------------------------------------------------------------------ profile


KERNEL_NAMES = {
    "default": "default kernels (XNNPACK)",
    "optimized": "builtin kernels, no default delegates",
    "reference": "reference kernels",
}
REFERENCE_RUNS_DIVISOR = 20  # reference kernels are 10-100x slower: a twentieth of the runs (at least 3)


def runner(path: str | Path, threads: int, kernels: str = "default") -> tuple[Run, str]:
    """(one inference of the .tflite in LiteRT per call, on seeded random inputs; the runtime's name)."""
    model_bytes = Path(path).read_bytes()
    run = _litert_run(model_bytes, _random_inputs(read(model_bytes)), kernels, threads)
    return run, f"LiteRT, {KERNEL_NAMES[kernels]}"


def _litert_run(model_bytes: bytes, inputs: list[np.ndarray], kernels: str, threads: int) -> Run:
    return partial(invoke_litert, litert_interpreter(model_bytes, kernels=kernels, threads=threads), inputs)


def profile(
    path: str | Path,
    *,
    runs: int = 100,
    warmup: int = 10,
    threads: int | Sequence[int] = 1,
    progress: bool = False,
) -> dict:
    """Latency of a .tflite in LiteRT, one ``sweep`` row per kernel set (default, without default delegates,
    reference with fewer runs) and thread count; ``latency_ms`` holds the first thread count's rows by
    kernel set."""
    model_bytes = Path(path).read_bytes()
    graph = read(model_bytes)
    inputs = _random_inputs(graph)
    counts = thread_counts(threads)
    plan = [  # (kernels, threads, timed runs, warm-up runs)
        (kernels, count, max(3, runs // REFERENCE_RUNS_DIVISOR), 1)
        if kernels == "reference"
        else (kernels, count, runs, warmup)
        for kernels in LITERT_KERNELS
        for count in counts
    ]
    sweep = []
    total = sum(timed + warm for _, _, timed, warm in plan)
    with progress_bar(total, f"profiling {Path(path).name}", progress) as bar:
        for kernels, count, kernel_runs, kernel_warmup in plan:
            run = _litert_run(model_bytes, inputs, kernels, count)
            times = timed_runs(run, runs=kernel_runs, warmup=kernel_warmup, bar=bar)
            sweep.append({"kernels": kernels, "threads": count, **latency_stats(times)})
    result = {
        "artifact": str(path),
        "runtime": "LiteRT",
        "size_bytes": len(model_bytes),
        "warmup": warmup,
        "threads": counts[0],
        "latency_ms": {
            row["kernels"]: {k: v for k, v in row.items() if k not in ("kernels", "threads")}
            for row in sweep
            if row["threads"] == counts[0]
        },
        "sweep": sweep,
        "ops": dict(sorted(Counter(op.opcode for op in graph.operators).items())),
    }
    if importlib.util.find_spec("tflite_micro") is not None and any(t.dtype == np.int8 for t in graph.tensors):
        from edgeq.targets.tflm import artifact as tflm

        arena = tflm.measure_arena(model_bytes)
        result["tflm"] = {
            "flash_bytes": len(model_bytes),
            "arena_bytes": arena.arena_bytes,
            "recorded_allocation_total": arena.recorded_total,
            "resolver_ops": tflm.resolver_ops(model_bytes),
        }
    return result


def _random_inputs(graph: Graph) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [_random_input(graph.tensors[i], rng) for i in graph.inputs]


def _random_input(tensor: Tensor, rng: np.random.Generator) -> np.ndarray:
    if tensor.dtype == np.float32:
        return rng.standard_normal(tensor.shape).astype(np.float32)
    info = np.iinfo(tensor.dtype)
    return rng.integers(info.min, info.max + 1, tensor.shape).astype(tensor.dtype)


def format_profile(result: dict) -> str:
    sweep = result["sweep"]
    lines = [
        f"{result['artifact']}: LiteRT, {result['size_bytes'] / 1e6:.2f} MB, {result['warmup']} warm-up runs "
        "(1 for reference kernels)",
        *format_latency_table(
            sweep, "kernels, threads", [f"{KERNEL_NAMES[row['kernels']]}, {row['threads']}" for row in sweep]
        ),
    ]
    if "tflm" in result:
        tflm = result["tflm"]
        lines.append(
            f"  TFLite Micro: arena {tflm['arena_bytes']} B (smallest that runs), flash {tflm['flash_bytes']} B, "
            f"resolver: {', '.join(tflm['resolver_ops'])}"
        )
    lines.append("  ops: " + ", ".join(f"{k} {v}" for k, v in result["ops"].items()))
    return "\n".join(lines)
