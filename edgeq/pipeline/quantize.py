"""The quantization pipeline: float model + calibration data + recipe -> QDQ model + report.

    preprocess (passes.preprocess) -> plan (edgeq.quantization.plan) -> calibrate (edgeq.calibration.collect)
    -> encodings from the recipe's range method -> InsertQDQPass

Calibration is the expensive step and does not depend on the activation type (int8 and uint8 encodings of one
range share the scale; the zero point moves by 128), so ``calibrate_model`` runs once and ``build_qdq`` can
be called for several activation types, as the ONNX Runtime target does to pick the one it fuses.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.calibration.collect import collect
from edgeq.calibration.observers import TensorObserver
from edgeq.data.sources import CalibrationData
from edgeq.io.onnx_model import clone_model
from edgeq.io.session import fixed_batch_size, session
from edgeq.measure.metrics import sqnr_db
from edgeq.passes.adaround import AdaRoundPass
from edgeq.passes.bias_correction import BiasCorrectionPass
from edgeq.passes.dyadic import DyadicPass
from edgeq.passes.equalize import EqualizePass
from edgeq.passes.insert_qdq import InsertQDQPass
from edgeq.passes.preprocess import preprocess
from edgeq.passes.range_search import search_ranges, searchable_groups
from edgeq.quantization.plan import Exclusions, assign_encodings, plan_quantization
from edgeq.quantization.qparams import ACTIVATION_TYPES
from edgeq.quantization.recipe import Recipe

CHANNEL_SCALES_KEY = "edgeq.channel_scales"


@dataclass
class Calibration:
    """A preprocessed float model and the statistics of every tensor that will be quantized."""

    model: ir.Model
    observers: dict[str, TensorObserver]
    num_samples: int
    seconds: float
    data: CalibrationData | None = None  # for the passes after QDQ insertion that measure on data
    passes: dict = field(default_factory=dict)  # what the float-model passes did


def calibrate_model(
    model: ir.Model, data: CalibrationData, recipe: Recipe, *, progress: bool = True
) -> Calibration:
    """Preprocess MODEL (in place) and collect statistics for every tensor the recipe quantizes."""
    start = time.perf_counter()
    preprocess(model)
    passes = {}
    if "equalize" in recipe.passes:
        passes["equalize"] = equalize(model, data, recipe)
    plan = plan_quantization(model.graph, Exclusions(recipe.exclude))
    observers = collect(
        model,
        plan.calibration_tensors(),
        data,
        histogram=recipe.calib_method != "minmax",
        batch_size=recipe.batch_size,
        progress=progress,
    )
    return Calibration(model, observers, data.num_samples, time.perf_counter() - start, data, passes)


def equalize(model: ir.Model, data: CalibrationData, recipe: Recipe) -> dict:
    """Cross-layer equalization and high-bias absorption (bounded by DATA); the float model's change is measured
    on a data batch ("to-relu" changes the function where activations exceed 6, absorption off the data).
    With ``equalize_scaling="auto"``, per-channel weights are scaled by activation ranges, per-tensor by weights."""
    batch = next(iter(data.batches(fixed_batch_size(model) or 8)))
    before = session(model).run(None, batch)
    scaling = recipe.equalize_scaling
    if scaling == "auto":
        scaling = "activations" if recipe.per_channel else "weights"
    equalizer = EqualizePass(clipped=recipe.equalize_clip, scaling=scaling, data=data)
    equalizer(model)
    after = session(model).run(None, batch)
    report = dict(equalizer.report)
    report["float_sqnr_db_on_calibration_batch"] = min(
        sqnr_db(b, a) for b, a in zip(before, after, strict=True)
    )
    report["channel_scales"] = {name: scale.tolist() for name, scale in equalizer.channel_scales.items()}
    return report


def build_qdq(
    calibration: Calibration, recipe: Recipe, activation_type: str | None = None, *, progress: bool = False
) -> tuple[ir.Model, dict]:
    """The QDQ model for CALIBRATION's model with RECIPE's options; returns it with a JSON-able report."""
    qtype = ACTIVATION_TYPES[activation_type or recipe.activation_type]

    def insert_qdq(range_factors: dict[str, float] | None = None):
        model = clone_model(calibration.model)
        plan = plan_quantization(model.graph, Exclusions(recipe.exclude))
        ranges = {
            name: calibration.observers[name].range(recipe.calib_method, num_bits=8, percentile=recipe.percentile)
            for name in plan.calibration_tensors()
        }
        encodings = assign_encodings(plan, ranges, qtype, range_factors)
        tensor_groups = searchable_groups(plan)
        qdq = InsertQDQPass(
            plan,
            encodings,
            weight_bits=recipe.weight_bits,
            per_channel=recipe.per_channel,
            weight_range=recipe.weight_range,
            weight_rounding=recipe.weight_rounding,
        )
        qdq(model)
        return model, plan, encodings, qdq, tensor_groups

    model, plan, encodings, qdq, tensor_groups = insert_qdq()
    passes = dict(calibration.passes)

    def correct_biases(model: ir.Model) -> dict:
        correction = BiasCorrectionPass(
            calibration.model, calibration.data, mode=recipe.bias_correction, progress=progress
        )
        correction(model)
        return correction.summary()

    if "range-search" in recipe.passes:
        # Searched with the biases corrected, when the recipe corrects them: clipping shifts a tensor's mean,
        # which bias correction removes. The QDQ model is then rebuilt from the chosen ranges (bias scales
        # follow) and the passes below run on it.
        if "bias-correction" in recipe.passes:
            correct_biases(model)
        search = search_ranges(model, tensor_groups, calibration.model, calibration.data, progress=progress)
        model, plan, encodings, qdq, _ = insert_qdq(search.factors)
        passes["range-search"] = search.summary()
    if "adaround" in recipe.passes:
        adaround = AdaRoundPass(
            calibration.model, calibration.data, weight_bits=recipe.weight_bits, progress=progress
        )
        adaround(model)
        passes["adaround"] = {
            "layers": len(adaround.report),
            "adopted": sum(bool(row["adopted"]) for row in adaround.report.values()),
            "skipped": dict(adaround.skipped),
            "seconds": round(sum(row["seconds"] + row.get("data_seconds", 0.0) for row in adaround.report.values()), 1),
        }
    if "bias-correction" in recipe.passes:
        passes["bias-correction"] = correct_biases(model)
    if recipe.dyadic_bits < 31 or recipe.pow2:  # last: it moves the scales the passes above worked with
        before = clone_model(model)
        dyadic = DyadicPass(recipe.dyadic_bits, pow2=recipe.pow2)
        dyadic(model)
        passes["dyadic"] = {**dyadic.report, **_dyadic_cost(calibration, before, model)}
    # The BatchNorm statistics kept on folded nodes serve the passes that run before this point; in the
    # artifact they would only add ~20% to MobileNetV2's size.
    common_passes.ClearMetadataAndDocStringPass()(model)
    scales = calibration.passes.get("equalize", {}).get("channel_scales")
    if scales:  # lets `edgeq compare` undo the per-channel scaling of tensors inside equalized pairs
        model.metadata_props[CHANNEL_SCALES_KEY] = json.dumps(scales)
    warnings = [
        f"node {name}: bias would overflow int32 in channel(s) {channels}; raised their weight scale"
        for name, channels in qdq.raised_bias_channels.items()
    ] + [f"node {name}: bias kept float (shape does not broadcast per channel)" for name in qdq.float_biases]
    report = {
        "activation_type": qtype.name,
        "passes": {
            name: {k: v for k, v in report.items() if k != "channel_scales"} for name, report in passes.items()
        },
        "quantized_nodes": dict(Counter(n.op_type for n in plan.quantized)),
        "fused_activations": len(plan.fused_activation),
        "float_nodes": plan.float_nodes,
        "quantized_tensors": len(plan.tensors),
        "encodings": {
            name: {"scale": float(e.scale), "zero_point": e.zero_point} for name, e in encodings.items()
        },
        "warnings": warnings,
        "calibration": {
            "samples": calibration.num_samples,
            "method": recipe.calib_method,
            "seconds": round(calibration.seconds, 3),
        },
    }
    return model, report


def _dyadic_cost(calibration: Calibration, before: ir.Model, after: ir.Model) -> dict:
    """What the dyadic mode costs: output SQNR against the float model on a calibration batch, before and after."""
    batch = next(iter(calibration.data.batches(fixed_batch_size(calibration.model) or 8)))

    def outputs(model: ir.Model) -> list:
        return session(model).run(None, batch)

    reference = outputs(calibration.model)
    return {
        f"sqnr_db_on_calibration_batch_{name}": min(
            sqnr_db(r, q) for r, q in zip(reference, outputs(model), strict=True)
        )
        for name, model in (("before", before), ("after", after))
    }


def quantize_model(
    model: ir.Model, data: CalibrationData, recipe: Recipe, *, progress: bool = True
) -> tuple[ir.Model, dict]:
    """Calibrate and quantize MODEL (preprocessed in place) in one call."""
    return build_qdq(calibrate_model(model, data, recipe, progress=progress), recipe, progress=progress)
