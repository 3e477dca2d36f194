"""``edgeq convert``: calibrate once, build the artifact for a target, validate it by running it.

For ONNX Runtime with ``activation_type = "auto"`` both int8 and uint8 activation models are built from the same
calibration (same scales; the zero point moves by 128), each is loaded by onnxruntime with all graph
optimizations, and the one whose optimized graph runs more convolutions as fused integer kernels wins, then the one
that leaves fewer compute ops in float (for models without convolutions), then int8 (what TFLite wants). What ran
fused is part of the report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx_ir as ir

from edgeq.data import CalibrationData
from edgeq.modelio import model_bytes
from edgeq.quantize import build_qdq, calibrate_model
from edgeq.recipe import Recipe
from edgeq.targets import onnxruntime as ort_target


def _fusion_of(model: ir.Model, workdir: Path, name: str):
    path = workdir / f"{name}.onnx"
    path.write_bytes(model_bytes(model))
    return ort_target.fusion_report(path)


def _fusion_score(fusion: dict, order: int) -> tuple:
    """More integer convolutions first, then fewer compute ops left in float, then the earlier candidate."""
    return (fusion["convs_fused"], -len(fusion["float_compute"]), -order)


def convert_onnxruntime(
    float_model: ir.Model,
    float_path: str | Path,
    calib: CalibrationData,
    eval_data: CalibrationData,
    recipe: Recipe,
    outdir: Path,
    *,
    labels=None,
    ort_format: bool = False,
    progress: bool = True,
) -> dict:
    calibration = calibrate_model(float_model, calib, recipe, progress=progress)
    candidates = ["int8", "uint8"] if recipe.activation_type == "auto" else [recipe.activation_type]
    built: dict[str, tuple[ir.Model, dict, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for activation_type in candidates:
            model, report = build_qdq(calibration, recipe, activation_type)
            fusion = _fusion_of(model, Path(tmp), activation_type).to_dict()
            built[activation_type] = (model, report, fusion)
    chosen = max(candidates, key=lambda t: _fusion_score(built[t][2], candidates.index(t)))
    model, report, fusion = built[chosen]
    name = Path(float_path).stem
    artifacts = ort_target.emit(model_bytes(model), outdir, f"{name}.qdq", ort_format=ort_format)
    validation = ort_target.validate(float_path, artifacts[0], eval_data, labels=labels)
    return {
        "input": str(float_path),
        "target": "onnxruntime",
        "artifacts": [str(p) for p in artifacts],
        "recipe": recipe.to_dict(),
        **report,
        "activation_type_choice": {t: built[t][2] for t in candidates},
        "fusion": fusion,
        "validation": validation,
    }
