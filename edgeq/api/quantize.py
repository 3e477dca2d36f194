"""``edgeq.quantize``: calibrate a float model and return (and optionally write) its QDQ model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeq.api.inputs import SYNTHETIC, calibration_data, float_model, recipe_of, refuse_unused_image_spec
from edgeq.api.mixed import check_options, mixed_precision, write_plots
from edgeq.io.files import check_output_path, json_text, staged_files, write_text_atomic
from edgeq.io.model_checks import replaced_text
from edgeq.io.onnx_model import save_model, to_proto
from edgeq.passes.integer_gather import gather_integers
from edgeq.passes.layer_norm_sums import sums_before_layer_norms
from edgeq.passes.pack_int4 import pack_int4_weights
from edgeq.passes.prelu_max import prelus_as_max
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
    eval_data=None,
    labels=None,
    budget=None,
    max_drop: float | None = None,
    metric: str | None = None,
    ray_address: str | None = None,
    replace_nonfinite: bool = False,
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
    recipe's ``cpu`` (uint8 on x86, int8 on ARM64: edgeq.quantization.cpus). OUTPUT (an .onnx path, never the
    input) and REPORT (a JSON path) appear together or not at all (edgeq.io.files.staged_files).

    With ``mode="dynamic"`` the model is ONNX Runtime's dynamically quantized one instead (passes/insert_dynamic.py:
    int8 weights of the products and embedding tables, activations quantized per run).

    BUDGET (``"size=1.2MB"``) or MAX_DROP (with METRIC: agreement, top1, auc, sqnr or module:function, measured on
    EVAL_DATA, default the calibration data, and LABELS, default an .npz's "label" key) choose each weighted
    layer's precision (edgeq.api.mixed, docs/mixed-precision.md; RAY_ADDRESS: the Ray cluster for its tasks); the
    report's ``mixed_precision`` says what was chosen and why, and its plots are written beside REPORT.

    A model with NaN weights (or infinite ones) is refused unless REPLACE_NONFINITE: then they are replaced (NaN
    by 0, +-inf by the largest finite magnitude of the tensor) and listed in the report (``nonfinite_replaced``)
    and its warnings.

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
    check_options(budget, max_drop, metric, recipe, eval_data=eval_data, ray_address=ray_address)
    with float_model(model, example_inputs=example_inputs, replace_nonfinite=replace_nonfinite) as source:
        data = calibration_data(source, calib, recipe, image_spec=image_spec, progress=progress)
        mixed = mixed_precision(
            source, data, recipe, eval_data=eval_data, labels=labels, image_spec=image_spec, budget=budget,
            max_drop=max_drop, metric=metric, ray_address=ray_address, progress=progress,
        )  # fmt: skip
        recipe = mixed.recipe if mixed is not None else recipe
        # the QDQ model is ONNX Runtime's: weights its kernels compute exactly on the CPU it is for
        cpu = resolve_cpu(recipe.cpu)
        activation_type = cpu.activation_type if recipe.activation_type == "auto" else recipe.activation_type
        pipeline = Pipeline(recipe, progress=progress)
        qdq, stages = pipeline.quantize(
            pipeline.calibrate(source.model, data),
            activation_type,
            gemm_pair_limit=None if activation_type == "int16" else cpu.pair_limit(recipe.widest_weight_bits),
            onnxruntime=True,
        )
        if recipe.mode == "dynamic":  # ONNX Runtime's model only: its faster form (the onnxruntime target's)
            gather_integers(qdq)
            sums_before_layer_norms(qdq)
        prelus_as_max(qdq)  # ONNX Runtime's PRelu is slow (the onnxruntime target's form)
        full_report = {"input": source.label, "recipe": recipe.to_dict(), "cpu": cpu.name, **stages}
        if source.replaced:
            full_report["nonfinite_replaced"] = source.replaced
            full_report["warnings"].append(replaced_text(source.replaced))
        full_report.update(pack_int4_weights(qdq, recipe))  # ONNX Runtime's model: 4-bit weights as INT4
        if mixed is not None:
            full_report["mixed_precision"] = mixed.report
        if recipe.activation_type == "auto":
            full_report["activation_type_why"] = f"{activation_type}: what ONNX Runtime runs fastest on {cpu.name}"
        if output is not None:
            full_report["output"] = str(output)
        # the model, the report and its plots appear together or not at all
        with staged_files(*(path for path in (output, report) if path is not None), inputs=inputs) as staged:
            if staged.swept:
                full_report["warnings"].append(
                    f"removed the staging folders of runs that were killed: {', '.join(map(str, staged.swept))}"
                )
            if output is not None:
                save_model(qdq, staged.paths[0], source.path, _path_or_none(calib))
            if report is not None:
                write_text_atomic(staged.paths[-1], json_text(full_report) + "\n")
                write_plots(mixed, staged.paths[-1].parent, f"{Path(report).stem}.")
    return QuantizeResult(to_proto(qdq), Path(output) if output is not None else None, full_report)


def _path_or_none(source) -> str | os.PathLike | None:
    return source if isinstance(source, str | os.PathLike) and source != SYNTHETIC else None

