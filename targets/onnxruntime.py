"""The ONNX Runtime target: QDQ ``.onnx`` (and ``.ort``) artifacts, what ORT fuses, validation and profiling.

* ``fusion_report``: onnxruntime rewrites ``DQ -> Conv -> Q`` units into integer kernels (QLinearConv and
  friends) only when it can; on x86 that depends on the activation type. The report loads the model with every
  graph optimization, saves the optimized graph (``SessionOptions.optimized_model_filepath``) and counts which
  convolutions and other compute ops became integer kernels and which still run in float.
* ``emit``: writes ``<name>.onnx`` atomically and, on request, ``<name>.ort`` plus
  ``required_operators.config`` with onnxruntime's own ``convert_onnx_models_to_ort`` (for minimal mobile builds).
* ``validate``: runs the float and the quantized model on the same data: SQNR, max abs error, top-1 agreement
  and (with labels) accuracy per output.
* ``profile``: latency over N runs after warm-up (p50/p90/p99), and a per-node/per-op-type breakdown from ORT's
  profiler, measured in a separate session so that profiling overhead does not touch the latency figures.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgeq.data import CalibrationData
from edgeq.errors import EdgeqError
from edgeq.files import write_bytes_atomic
from edgeq.metrics import ErrorSums, accuracy

CONV_OPS = {"Conv", "ConvTranspose", "FusedConv"}
INTEGER_CONV_OPS = {"QLinearConv", "NhwcQLinearConv", "ConvInteger"}
FLOAT_COMPUTE_OPS = CONV_OPS | {
    "Gemm",
    "MatMul",
    "FusedMatMul",
    "FusedGemm",
    "Add",
    "Mul",
    "AveragePool",
    "GlobalAveragePool",
    "Softmax",
    "Sigmoid",
    "Concat",
}


@dataclass
class FusionReport:
    convs_total: int
    convs_fused: int
    op_counts: dict[str, int]
    quantized_kernels: dict[str, int]
    float_compute: list[str] = field(default_factory=list)  # node names of compute ops left in float

    def to_dict(self) -> dict:
        return asdict(self)


def _session_options(threads: int, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _session(model, threads: int = 1, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(
            source, options or _session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types, none of them exported
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeqError(
            f"onnxruntime cannot load {model if isinstance(model, Path) else 'the model'}: {first}"
        ) from None


def fusion_report(model_path: str | Path, *, threads: int = 1) -> FusionReport:
    """What onnxruntime's optimizer turned into integer kernels, from the optimized graph it saves."""
    model_path = Path(model_path)
    source = onnx.load(model_path)
    convs_total = sum(1 for n in source.graph.node if n.op_type in CONV_OPS)
    with tempfile.TemporaryDirectory() as tmp:
        options = _session_options(threads)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        _session(model_path, options=options)
        optimized = onnx.load(options.optimized_model_filepath)
    op_counts = Counter(n.op_type for n in optimized.graph.node)
    quantized = {
        op: c
        for op, c in op_counts.items()
        if op.startswith("QLinear")
        or op.startswith("NhwcQLinear")
        or op in ("QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat")
    }
    float_compute = [n.name for n in optimized.graph.node if n.op_type in FLOAT_COMPUTE_OPS]
    convs_fused = sum(c for op, c in op_counts.items() if op in INTEGER_CONV_OPS)
    return FusionReport(convs_total, convs_fused, dict(op_counts), quantized, float_compute)


def write_ort_format(onnx_path: Path, outdir: Path) -> list[Path]:
    """``.ort`` + ``required_operators.config`` via onnxruntime's convert_onnx_models_to_ort, moved into OUTDIR."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(onnx_path, work / onnx_path.name)
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                convert_onnx_models_to_ort(
                    work / onnx_path.name,
                    output_dir=work / "out",
                    optimization_styles=[OptimizationStyle.Fixed],
                )
        except Exception as exc:  # the tool raises bare RuntimeErrors with ORT's message
            raise EdgeqError(
                f"onnxruntime's .ort conversion failed: {str(exc).strip().splitlines()[0]}"
            ) from None
        produced = sorted((work / "out").glob("*.ort")) + sorted((work / "out").glob("*.config"))
        if not produced:
            raise EdgeqError("onnxruntime's .ort conversion produced no files")
        written = []
        for path in produced:
            name = "required_operators.config" if path.suffix == ".config" else onnx_path.stem + ".ort"
            write_bytes_atomic(outdir / name, path.read_bytes())
            written.append(outdir / name)
    return written


def emit(model_bytes: bytes, outdir: Path, name: str, *, ort_format: bool = False) -> list[Path]:
    """Write ``<name>.onnx`` (and the .ort artifacts) into OUTDIR; the .onnx is always first."""
    path = Path(outdir) / f"{name}.onnx"
    write_bytes_atomic(path, model_bytes)
    return [path, *(write_ort_format(path, Path(outdir)) if ort_format else [])]


def run_batches(session: ort.InferenceSession, names: list[str], data: CalibrationData, batch_size: int):
    """Yield (batch, outputs) over DATA in batches the model accepts: BATCH_SIZE samples, or exactly the
    model's batch dimension where that is fixed."""
    fixed = {i.shape[0] for i in session.get_inputs() if i.shape and isinstance(i.shape[0], int)}
    size = next(iter(fixed)) if len(fixed) == 1 else batch_size
    for batch in data.batches(size):
        if fixed and next(iter(batch.values())).shape[0] != size:
            raise EdgeqError(
                f"the model's batch dimension is fixed to {size}; give a multiple of {size} samples"
            )
        yield batch, session.run(names, batch)


def validate(
    float_model: str | Path,
    quant_model: str | Path,
    data: CalibrationData,
    *,
    labels: np.ndarray | None = None,
    batch_size: int = 32,
    threads: int = 2,
) -> dict:
    """Run both models on DATA: per-output SQNR, max abs error, top-1 agreement, and accuracy with LABELS."""
    reference = _session(Path(float_model), threads)
    quantized = _session(Path(quant_model), threads)
    names = [o.name for o in reference.get_outputs()]
    sums = {name: ErrorSums() for name in names}
    first_scores: dict[str, list[np.ndarray]] = defaultdict(list)
    for batch, ref in run_batches(reference, names, data, batch_size):
        test = quantized.run(names, batch)
        for name, r, t in zip(names, ref, test, strict=True):
            sums[name].add(r, t)
        if labels is not None:
            first_scores["float"].append(ref[0])
            first_scores["quantized"].append(test[0])
    result = {"samples": data.num_samples, "outputs": {name: s.to_dict() for name, s in sums.items()}}
    if labels is not None:
        labels = np.asarray(labels)[: data.num_samples]
        result["accuracy"] = {
            kind: accuracy(np.concatenate(scores), labels) for kind, scores in first_scores.items()
        }
    return result


_ORT_TYPES = {
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


def _random_inputs(session: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal floats or small integers for every input; symbolic dimensions become 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        dtype = np.dtype(_ORT_TYPES.get(spec.type, np.float32))
        values = rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 10, shape)
        feeds[spec.name] = values.astype(dtype)
    return feeds


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def profile(
    model_path: str | Path,
    *,
    runs: int = 100,
    warmup: int = 10,
    threads: int = 1,
    per_op: bool = True,
    inputs: dict[str, np.ndarray] | None = None,
) -> dict:
    """Latency statistics (ms) and, with PER_OP, the per-node and per-op-type time breakdown."""
    model_path = Path(model_path)
    session = _session(model_path, threads)
    feeds = inputs or _random_inputs(session)
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    result = {
        "artifact": str(model_path),
        "runtime": f"onnxruntime {ort.__version__}",
        "threads": threads,
        "runs": runs,
        "size_bytes": model_path.stat().st_size,
        "latency_ms": {
            "p50": _percentile(times, 50),
            "p90": _percentile(times, 90),
            "p99": _percentile(times, 99),
            "mean": statistics.fmean(times),
            "min": min(times),
            "stdev": statistics.stdev(times) if len(times) > 1 else 0.0,
        },
    }
    if per_op:
        result["per_op"] = _per_op_breakdown(
            model_path,
            feeds,
            threads,
            runs=max(10, min(runs, 50)),
            warmup=warmup,
            latency_ms=result["latency_ms"]["p50"],
        )
    if model_path.suffix == ".onnx":
        result["fusion"] = fusion_report(model_path, threads=threads).to_dict()
    return result


def _per_op_breakdown(
    model_path: Path, feeds, threads: int, *, runs: int, warmup: int, latency_ms: float
) -> dict:
    """Mean time per node over the last RUNS runs of a profiled session (the warm-up runs are dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = _session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "edgeq_profile")
        session = _session(model_path, options=options)
        for _ in range(warmup + runs):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    run_windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace if e.get("name") == "model_run")[-runs:]
    start = run_windows[0][0] if run_windows else 0
    per_node: dict[str, float] = defaultdict(float)
    node_type: dict[str, str] = {}
    for event in trace:
        if (
            event.get("cat") != "Node"
            or not event.get("name", "").endswith("_kernel_time")
            or event["ts"] < start
        ):
            continue
        name = event["name"][: -len("_kernel_time")]
        per_node[name] += event["dur"] / 1e3 / runs
        node_type[name] = event.get("args", {}).get("op_name", "?")
    per_type: dict[str, float] = defaultdict(float)
    for name, ms in per_node.items():
        per_type[node_type[name]] += ms
    total = sum(per_node.values())
    return {
        "runs": runs,
        "sum_ms": total,
        "fraction_of_latency": total / latency_ms if latency_ms else None,
        "by_op_type": dict(sorted(per_type.items(), key=lambda kv: -kv[1])),
        "by_node": [
            {"node": n, "op_type": node_type[n], "ms": ms}
            for n, ms in sorted(per_node.items(), key=lambda kv: -kv[1])
        ],
    }


def format_profile(result: dict) -> str:
    lat = result["latency_ms"]
    lines = [
        f"{result['artifact']}: {result['runtime']}, {result['threads']} thread(s), {result['runs']} runs, "
        f"{result['size_bytes'] / 1024:.1f} KiB",
        f"latency ms: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
        f"mean {lat['mean']:.3f}  min {lat['min']:.3f}",
    ]
    if "fusion" in result:
        f = result["fusion"]
        lines.append(
            f"integer convs: {f['convs_fused']}/{f['convs_total']}; float compute ops left: "
            f"{len(f['float_compute'])}"
        )
    if "per_op" in result:
        per_op = result["per_op"]
        frac = per_op["fraction_of_latency"]
        lines.append(
            f"per op type (sum {per_op['sum_ms']:.3f} ms"
            + (f" = {100 * frac:.0f}% of p50" if frac else "")
            + "):"
        )
        for op, ms in per_op["by_op_type"].items():
            lines.append(f"  {op:<28} {ms:8.3f} ms")
    return "\n".join(lines)
