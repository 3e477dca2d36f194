"""``edgeq.quantize``: calibrate a float model and return (and optionally write) its QDQ model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeq.api.inputs import SYNTHETIC, calibration_data, float_model, recipe_of, refuse_unused_image_spec
from edgeq.io.files import check_output_path, json_text, write_text_atomic
from edgeq.io.onnx_model import save_model, to_proto
from edgeq.passes.integer_gather import gather_integers
from edgeq.passes.layer_norm_sums import sums_before_layer_norms
from edgeq.pipeline import Pipeline
from edgeq.quantization.cpus import resolve_cpu
from edgeq.quantization.recipe import Recipe


@dataclass
class QuantizeResult:
    """The QDQ model, where it was written (None if not), and the report of every pipeline stage."""

    model: onnx.ModelProto
    path: Path | None
    report: dict

    @property
    def warnings(self) -> list[str]:
        return self.report["warnings"]


def quantize(
    model,
    calib,
    *,
    output: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    recipe: Recipe | str | os.PathLike | dict | None = None,
    example_inputs=None,
    image_spec=None,
    progress: bool = False,
    **options,
) -> QuantizeResult:
    """Calibrate MODEL on CALIB and build its QDQ (QuantizeLinear/DequantizeLinear) model.

    MODEL: an .onnx path, an ``onnx.ModelProto`` or a ``torch.nn.Module`` with ``example_inputs``. CALIB: an .npz
    path, an image folder (with ``image_spec``, e.g. "resize=256,crop=224,mean=0.485/0.456/0.406,
    std=0.229/0.224/0.225"), 'module:function', "synthetic", an array, a dict of arrays, a callable or an
    iterable of samples (edgeq.api.inputs). RECIPE: a ``Recipe``, a TOML file or a dict; OPTIONS are recipe fields
    (``activation_type="uint8"``, ``passes=["equalize", "bias-correction"]``, ``per_channel=False``, ...) that
    override it. Without a recipe or an activation type, activations get the type ONNX Runtime runs fastest on the
    recipe's ``cpu`` (uint8 on x86, int8 on ARM64: edgeq.quantization.cpus). OUTPUT (an .onnx path, never the input) and REPORT (a JSON path) are written atomically.

    With ``mode="dynamic"`` the model is ONNX Runtime's dynamically quantized one instead (passes/insert_dynamic.py:
    int8 weights of the products and embedding tables, activations quantized per run).

    Raises an ``EdgeqError`` subclass, with the message the command line prints, for any bad input.
    """
    inputs = (model if isinstance(model, str | os.PathLike) else None, _path_or_none(calib))
    if output is not None:
        check_output_path(output, *inputs)
    if report is not None:
        check_output_path(report, *inputs, output)
    if recipe is None and options.get("activation_type") is None:
        options["activation_type"] = "auto"  # the type ONNX Runtime runs fastest on the deployment CPU
    refuse_unused_image_spec(image_spec, calib)
    recipe = recipe_of(recipe, synthetic=isinstance(calib, str) and calib == SYNTHETIC, **options)
    with float_model(model, example_inputs=example_inputs) as source:
        data = calibration_data(source, calib, recipe, image_spec=image_spec, progress=progress)
        # the QDQ model is ONNX Runtime's: weights its kernels compute exactly on the CPU it is for
        cpu = resolve_cpu(recipe.cpu)
        activation_type = cpu.activation_type if recipe.activation_type == "auto" else recipe.activation_type
        pipeline = Pipeline(recipe, progress=progress)
        qdq, stages = pipeline.quantize(
            pipeline.calibrate(source.model, data),
            activation_type,
            gemm_pair_limit=None if activation_type == "int16" else cpu.pair_limit(recipe.weight_bits),
            onnxruntime=True,
        )
        if recipe.mode == "dynamic":  # ONNX Runtime's model only: its faster form (the onnxruntime target's)
            gather_integers(qdq)
            sums_before_layer_norms(qdq)
        full_report = {"input": source.label, "recipe": recipe.to_dict(), "cpu": cpu.name, **stages}
        if recipe.activation_type == "auto":
            full_report["activation_type_why"] = f"{activation_type}: what ONNX Runtime runs fastest on {cpu.name}"
        if output is not None:
            save_model(qdq, output, source.path, _path_or_none(calib))
            full_report["output"] = str(output)
    if report is not None:
        write_text_atomic(report, json_text(full_report) + "\n")
    return QuantizeResult(to_proto(qdq), Path(output) if output is not None else None, full_report)


def _path_or_none(source) -> str | os.PathLike | None:
    return source if isinstance(source, str | os.PathLike) and source != SYNTHETIC else None

