"""``edgeq.verify``, ``edgeq.compare``, ``edgeq.profile`` and ``edgeq.report``: measure artifacts already written."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgeq.api.inputs import data_for, data_of, refuse_unused_image_spec
from edgeq.api.inputs import float_model as float_model_of
from edgeq.errors import DataError, ModelError
from edgeq.io.files import check_output_path
from edgeq.measure.latency import format_alternation
from edgeq.reports import compare as comparing
from edgeq.reports import page
from edgeq.reports import profile as profiling
from edgeq.reports.verify import data_specs, reference_graph
from edgeq.reports.verify import verify as verifying


@dataclass
class VerifyResult:
    """``bit_exact``: every exact runtime matched the integer reference; ``within_1_lsb_per_op``: every float-scale
    runtime stayed within 1 LSB of the reference kernel at every op; ``report``: the counts per runtime."""

    bit_exact: bool
    within_1_lsb_per_op: bool
    report: dict

    @property
    def passed(self) -> bool:
        return self.bit_exact and self.within_1_lsb_per_op


def verify(artifacts, data, *, samples: int = 16, image_spec=None) -> VerifyResult:
    """Run ARTIFACTS (the .tflite, ``<name>.integer.onnx`` and QDQ .onnx of one model) and edgeq's integer reference
    on the first SAMPLES samples of DATA (float inputs: a path or source as for quantize, or arrays)."""
    refuse_unused_image_spec(image_spec, data)
    paths = [Path(p) for p in ([artifacts] if isinstance(artifacts, str | os.PathLike) else artifacts)]
    graph = reference_graph(paths)
    source = data_for(data, data_specs(graph), image_spec=image_spec, max_samples=samples, what="verification data")
    report = verifying(paths, source, samples=samples, graph=graph)
    return VerifyResult(report["bit_exact"], report["within_1_lsb_per_op"], report)


@dataclass
class CompareResult:
    """Per graph output and per layer (float tensor the artifact keeps): SQNR in dB, max abs error, and top-1
    agreement for class scores."""

    outputs: dict[str, dict]
    layers: dict[str, dict]
    report: dict


def compare(
    float_model, artifact, data, *, example_inputs=None, image_spec=None, max_samples: int | None = None
) -> CompareResult:
    """The error of ARTIFACT (a QDQ .onnx or a .tflite) against FLOAT_MODEL (as for ``edgeq.quantize``) on DATA."""
    refuse_unused_image_spec(image_spec, data)
    with float_model_of(float_model, example_inputs=example_inputs) as source:
        data = data_of(data, source.model, image_spec=image_spec, max_samples=max_samples, what="comparison data")
        report = comparing.compare(source.path, artifact, data)
    return CompareResult(report["outputs"], report["layers"], report)


@dataclass
class ProfileResult:
    """``latency_ms`` is the first thread count's latency row (per kernel set for a .tflite); ``report`` holds
    every row, the per-op profile, the runtime's fusion, the static analysis and, for a .tflite, TFLite Micro's
    arena and the Cortex-M estimate; with ``against``, the alternated rounds and their ratios instead. ``text`` is
    what `edgeq profile` prints."""

    latency_ms: dict
    report: dict
    text: str


def profile(
    artifact, *, runs: int = 100, warmup: int = 10, threads=1, against=None, progress: bool = False
) -> ProfileResult:
    """Measure ARTIFACT (.onnx, .ort or .tflite) in every runtime that runs it; THREADS is a count or a list. With
    AGAINST (another artifact), time the two alternately instead: ``report["rows"]`` holds, per thread count, the
    median over rounds of the latency ratio ARTIFACT/AGAINST."""
    if against is not None:
        result = profiling.compare_latency(artifact, against, runs=runs, warmup=warmup, threads=threads, progress=progress)
        return ProfileResult({}, result, format_alternation(result))
    result = profiling.profile(artifact, runs=runs, warmup=warmup, threads=threads, progress=progress)
    return ProfileResult(result.get("latency_ms", {}), result, profiling.format_profile(artifact, result))


def report(
    float_model,
    artifacts,
    data,
    output: str | os.PathLike,
    *,
    quantize_report: str | os.PathLike | dict | None = None,
    runs: int = 50,
    example_inputs=None,
    image_spec=None,
    max_samples: int | None = None,
) -> Path:
    """Write one self-contained HTML page on ARTIFACTS of FLOAT_MODEL (per-layer SQNR, latency, MACs and memory,
    sizes; the recipe, stages and warnings of QUANTIZE_REPORT, a quantize or convert report) to OUTPUT."""
    artifacts = [str(a) for a in ([artifacts] if isinstance(artifacts, str | os.PathLike) else artifacts)]
    given = [p for p in (float_model, data, quantize_report) if isinstance(p, str | os.PathLike)]
    check_output_path(output, *given, *artifacts)
    refuse_unused_image_spec(image_spec, data)
    saved = load_report(quantize_report) if isinstance(quantize_report, str | os.PathLike) else quantize_report
    if saved is not None and not isinstance(saved, dict):
        raise DataError("quantize_report must be a report (a dict) or the path of a JSON report")
    with float_model_of(float_model, example_inputs=example_inputs) as source:
        data = data_of(data, source.model, image_spec=image_spec, max_samples=max_samples, what="report data")
        return page.write_page(output, source.path, artifacts, data, runs=runs, saved=saved)


def load_report(path: str | os.PathLike) -> dict:
    """A JSON report written by quantize or convert."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not a JSON report: {exc}") from None
    if not isinstance(saved, dict):
        raise ModelError(f"{path} is not an edgeq report")
    return saved
