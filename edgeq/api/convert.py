"""``edgeq convert``: calibrate once, build the artifact of each target, validate each by running it.

ONNX Runtime (``activation_type = "auto"``): both int8 and uint8 activation models are built from the same
calibration (same scales; the zero point moves by 128), each is loaded by onnxruntime with all graph
optimizations, and the one whose optimized graph runs more convolutions as fused integer kernels wins, then the one
that leaves fewer compute ops in float (for models without convolutions), then int8 (what TFLite wants). What ran
fused is part of the report.

TFLite and TFLite Micro: the int8 QDQ model (from the same calibration) is lowered to one .tflite; TFLite Micro
uses that same file, plus a C array, the op resolver list and the measured arena. All targets share one
calibration, so with ``--target all`` every artifact carries the same scales.

Integer-only ONNX (``integer_only``, with the onnxruntime target): that same int8 QDQ model, lowered as for
TFLite, becomes ``<name>.integer.onnx`` (edgeq.targets.integer_onnx), validated against the float model on the
evaluation data and checked bit-exact against the integer reference (edgeq.reports.verify) on the first samples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx_ir as ir

from edgeq.data.sources import CalibrationData
from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import model_bytes, save_model
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.onnxruntime import artifact as ort_target

TARGETS = ("onnxruntime", "tflite", "tflm")


def _fusion_of(model: ir.Model, workdir: Path, name: str):
    path = workdir / f"{name}.onnx"
    path.write_bytes(model_bytes(model))
    return ort_target.fusion_report(path)


def _fusion_score(fusion: dict, order: int) -> tuple:
    """More integer convolutions first, then fewer compute ops left in float, then the earlier candidate."""
    return (fusion["convs_fused"], -len(fusion["float_compute"]), -order)


def convert(
    float_model: ir.Model,
    float_path: str | Path,
    calib: CalibrationData,
    eval_data: CalibrationData,
    recipe: Recipe,
    outdir: Path,
    *,
    targets: tuple[str, ...] = ("onnxruntime",),
    labels=None,
    ort_format: bool = False,
    io: str = "int8",
    float_tflite: bool = False,
    integer_only: bool = False,
    verify_samples: int = 4,
    progress: bool = True,
) -> dict:
    """Calibrate FLOAT_MODEL once and build, write and validate the artifact of every target in TARGETS."""
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise EdgeqError(f"unknown target(s) {', '.join(sorted(unknown))}; choose from {', '.join(TARGETS)}")
    if integer_only and "onnxruntime" not in targets:
        raise EdgeqError("--integer-only is an ONNX Runtime artifact: use it with --target onnxruntime or all")
    tflite = "tflite" in targets or "tflm" in targets
    if (tflite or integer_only) and recipe.activation_type not in ("int8", "auto"):
        raise EdgeqError(
            f"the TFLite targets and --integer-only take int8 activations (TFLite's int8 kernels); "
            f"--activation-type {recipe.activation_type} is for --target onnxruntime"
        )
    pipeline = Pipeline(recipe, progress=progress)
    calibration = pipeline.calibrate(float_model, calib)
    name = Path(float_path).stem
    report = {"input": str(float_path), "recipe": recipe.to_dict(), "targets": {}}
    built: dict[str, tuple[ir.Model, dict]] = {}  # activation type -> QDQ model and report, built once each
    if "onnxruntime" in targets:
        report["targets"]["onnxruntime"] = _onnxruntime(
            calibration, recipe, float_path, eval_data, outdir, name, labels, ort_format, built
        )
    if tflite or integer_only:  # one int8 QDQ model for the .tflite and the integer-only model
        qdq, quant_report = built["int8"] if "int8" in built else pipeline.quantize(calibration, "int8")
        with tempfile.TemporaryDirectory() as tmp:
            qdq_path = save_model(qdq, Path(tmp) / f"{name}.int8.qdq.onnx")
            if integer_only:
                report["targets"]["onnxruntime-integer"] = _integer_onnx(
                    qdq, qdq_path, quant_report, float_path, eval_data, outdir, name, labels, verify_samples
                )
            if tflite:
                report["targets"].update(
                    _tflite(
                        qdq,
                        qdq_path,
                        quant_report,
                        float_path,
                        eval_data,
                        outdir,
                        name,
                        targets=targets,
                        labels=labels,
                        io=io,
                        float_tflite=float_tflite,
                        verify_samples=verify_samples,
                    )
                )
    report["artifacts"] = [a for t in report["targets"].values() for a in t["artifacts"]]
    return report


def _onnxruntime(calibration, recipe, float_path, eval_data, outdir, name, labels, ort_format, built) -> dict:
    """The ONNX Runtime artifact; the QDQ models it builds are left in BUILT for the other targets."""
    candidates = ["int8", "uint8"] if recipe.activation_type == "auto" else [recipe.activation_type]
    fusions: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for activation_type in candidates:
            built[activation_type] = Pipeline(recipe, progress=False).quantize(calibration, activation_type)
            fusions[activation_type] = _fusion_of(built[activation_type][0], Path(tmp), activation_type).to_dict()
    chosen = max(candidates, key=lambda t: _fusion_score(fusions[t], candidates.index(t)))
    (model, report), fusion = built[chosen], fusions[chosen]
    artifacts = ort_target.emit(model_bytes(model), outdir, f"{name}.qdq", ort_format=ort_format)
    validation = ort_target.validate(float_path, artifacts[0], eval_data, labels=labels)
    return {
        "artifacts": [str(p) for p in artifacts],
        **report,
        "activation_type_choice": fusions,
        "fusion": fusion,
        "validation": validation,
    }


def _integer_onnx(qdq, qdq_path, quant_report, float_path, eval_data, outdir, name, labels, verify_samples):
    from edgeq.reports.verify import verify
    from edgeq.targets.integer_onnx import artifact as integer_target

    emitted = integer_target.emit(qdq, outdir, name)
    path = emitted.pop("path")
    validation = ort_target.validate(float_path, path, eval_data, labels=labels)
    if verify_samples:
        validation["bit_exact"] = verify([path, qdq_path], eval_data, samples=verify_samples)
    return {"artifacts": [str(path)], **emitted, **quant_report, "validation": validation}


def _tflite(
    qdq,
    qdq_path,
    quant_report,
    float_path,
    eval_data,
    outdir,
    name,
    *,
    targets,
    labels,
    io,
    float_tflite,
    verify_samples,
) -> dict:
    from edgeq.targets.tflite import artifact as tflite_target

    emitted = tflite_target.emit(qdq, outdir, name, io=io, float_model=float_tflite)
    model_bytes_ = emitted.pop("bytes")
    validation = tflite_target.validate_on_data(
        float_path,
        model_bytes_,
        eval_data,
        labels=labels,
        verify_samples=verify_samples,
        quantized_onnx=qdq_path,
    )
    result = {}
    if "tflite" in targets:
        result["tflite"] = {
            **emitted,
            "artifacts": [str(p) for p in emitted["artifacts"]],
            **quant_report,
            "validation": validation,
        }
    if "tflm" in targets:
        from edgeq.targets.tflm import artifact as tflm

        tflm_report = tflm.emit(model_bytes_, outdir, tflm.c_identifier(name))
        tflm_report["artifacts"] = [str(p) for p in tflm_report.pop("files")]
        tflm_report["validation"] = {"bit_exact": validation.get("bit_exact")}
        result["tflm"] = tflm_report
    return result
