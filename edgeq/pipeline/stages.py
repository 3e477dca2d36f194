"""The pipeline's fixed stages, each an onnx_ir pass with a typed result (the optional ones are edgeq.passes.<name>).

    preprocess   in place     passes.preprocess: input shapes fixed, graph folded, BatchNorm folded, shapes inferred,
                              names unique
    plan         analysis     which nodes and tensors are quantized and which tensors share one encoding
                              (edgeq.quantization.plan)
    calibrate    analysis     streaming observers of every tensor the plan calibrates, over the calibration data
                              (edgeq.calibration.collect)
    quantize     functional   a copy of the calibrated float model with Q/DQ pairs (passes.insert_qdq), encodings
                              from the observers' ranges by the recipe's method (edgeq.quantization.plan)
    finalize     in place     drops the BatchNorm statistics and doc strings the passes used (about 20% of
                              MobileNetV2's size) and records equalization's channel scales in the metadata

An analysis stage returns its input unchanged (``modified`` False) and what it found.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.calibration.collect import collect
from edgeq.calibration.observers import TensorObserver
from edgeq.data import CalibrationData
from edgeq.io.onnx_model import clone_model
from edgeq.passes.insert_qdq import InsertQDQPass, InsertQDQResult
from edgeq.passes.stage import StageResult
from edgeq.quantization.layer_precision import FLOAT_REASON, LayerPrecisions
from edgeq.quantization.placement import Placement, onnxruntime_placement, placed_plan
from edgeq.quantization.plan import Exclusions, QuantPlan, assign_encodings, plan_quantization
from edgeq.quantization.qparams import Encoding, QType, range_method
from edgeq.quantization.range_choice import ROWS, choose_ranges, weight_readers
from edgeq.quantization.recipe import Recipe

# Metadata of a QDQ model: per-channel factors s of the tensors equalization left as original / s, which
# `edgeq compare` multiplies back to measure them in the float model's units.
CHANNEL_SCALES_KEY = "edgeq.channel_scales"


@dataclass
class PlanResult(StageResult):
    plan: QuantPlan = field(default_factory=QuantPlan)

    def summary(self) -> dict:
        return {"quantized_tensors": len(self.plan.tensors), "encoding_groups": len(self.plan.groups())}


class PlanStage(ir.passes.InPlacePass):
    """RECIPE's plan: its excluded nodes and the float ones of its layers table left float."""

    def __init__(self, recipe: Recipe):
        super().__init__()
        self.recipe = recipe

    def call(self, model: ir.Model) -> PlanResult:
        self.plan = plan_quantization(model.graph, Exclusions.of(self.recipe))
        return PlanResult(model, False, self.plan)


@dataclass
class CalibrateResult(StageResult):
    observers: dict[str, TensorObserver] = field(default_factory=dict)
    samples: int | None = None

    def summary(self) -> dict:
        return {"tensors": len(self.observers), "samples": self.samples}


class CalibrateStage(ir.passes.InPlacePass):
    """Observe every tensor the PLAN stage's plan calibrates, on DATA."""

    def __init__(self, plan: PlanStage, data: CalibrationData, recipe: Recipe, *, progress: bool):
        super().__init__()
        self.plan, self.data, self.recipe, self.progress = plan, data, recipe, progress

    def call(self, model: ir.Model) -> CalibrateResult:
        # every planned tensor, fixed-encoding ones too: a placement that leaves a Softmax float
        # (edgeq.quantization.placement) quantizes its output with a calibrated range
        names = [v.name for v in self.plan.plan.tensors]
        # ranges chosen by their readers' error (range_choice) where products' outputs stay float: the ONNX Runtime
        # placement of a transformer (edgeq.quantization.placement)
        chooses = self.recipe.calib_method != "minmax" and onnxruntime_placement(model.graph).float_unread_outputs
        observers = collect(
            model,
            names,
            self.data,
            histogram=self.recipe.calib_method != "minmax",
            batch_size=self.recipe.batch_size,
            progress=self.progress,
            keep_rows={name: ROWS for name in weight_readers(model.graph, set(names))} if chooses else None,
        )
        return CalibrateResult(model, False, observers, self.data.num_samples)


@dataclass
class QuantizeResult(InsertQDQResult):
    plan: QuantPlan = field(default_factory=QuantPlan)
    encodings: dict[str, Encoding] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"quantized_nodes": len(self.plan.quantized), "encodings": len(set(map(id, self.encodings.values())))}


class QuantizeStage(ir.passes.FunctionalPass):
    """The QDQ model of the calibrated float model: each group's encoding from its members' calibrated ranges
    (RECIPE's method) in QTYPE, then InsertQDQPass with RECIPE's weight options (and GEMM_PAIR_LIMIT on the
    weights of the layers ONNX Runtime runs as GEMMs, for CPUs whose kernels saturate: edgeq.quantization.cpus).

    ``rebuild(range_factors)`` builds it again with each group's range scaled by its factor (range search); the
    latest build is ``result``, whose encodings and warnings the report shows.
    """

    def __init__(
        self,
        observers: dict[str, TensorObserver],
        recipe: Recipe,
        qtype: QType,
        gemm_pair_limit: int | None = None,
        *,
        scale_cache: dict | None = None,
        placement: Placement | None = None,
    ):
        super().__init__()
        self.observers, self.recipe, self.qtype = observers, recipe, qtype
        self.placement = placement or Placement()
        self.float_outputs: list[str] = []
        self.range_choices: dict[str, dict] = {}  # tensor -> its readers' SQNR under each candidate range
        self.ranges: dict[str, tuple[float, float]] | None = None
        self.gemm_pair_limit = gemm_pair_limit
        self.scale_cache = {} if scale_cache is None else scale_cache
        self.float_model: ir.Model | None = None
        self.result: QuantizeResult | None = None

    def call(self, model: ir.Model) -> QuantizeResult:
        self.float_model, self.ranges = model, None
        return self._build(None)

    def rebuild(self, range_factors: dict[str, float]) -> ir.Model:
        return self._build(range_factors).model

    def _build(self, range_factors: dict[str, float] | None) -> QuantizeResult:
        model = clone_model(self.float_model)
        recipe = self.recipe
        plan, self.float_outputs = placed_plan(model.graph, Exclusions.of(recipe), self.placement)
        if self.qtype.name == "int16":
            plan.drop_int16_layers()
        if self.ranges is None:  # the same plan every build: range search's rebuilds only scale the ranges
            self.ranges = self._ranges(plan, model.graph)
        encodings = assign_encodings(plan, self.ranges, self.qtype, range_factors)
        inserted = InsertQDQPass(
            plan,
            encodings,
            weight_bits=recipe.weight_bits,
            layer_precisions=LayerPrecisions(recipe.layers),
            gemm_pair_limit=self.gemm_pair_limit,
            scale_cache=self.scale_cache,
            per_channel=recipe.per_channel,
            weight_range=recipe.weight_range,
            weight_rounding=recipe.weight_rounding,
        )(model)
        self.result = QuantizeResult(**vars(inserted), plan=plan, encodings=encodings)
        return self.result

    def _ranges(self, plan: QuantPlan, graph: ir.Graph) -> dict[str, tuple[float, float]]:
        """Each calibrated tensor's range by the recipe's method; in the ONNX Runtime placement of a transformer,
        the products' inputs chosen by their error (edgeq.quantization.range_choice)."""
        recipe = self.recipe
        method, bits = range_method(recipe.calib_method, self.qtype), 8 * self.qtype.dtype.itemsize
        ranges = {
            name: self.observers[name].range(
                method, num_bits=bits, symmetric=self.qtype.symmetric, percentile=recipe.percentile
            )
            for name in plan.calibration_tensors()
        }
        rows = {name: np.concatenate(self.observers[name].rows) for name in ranges if self.observers[name].rows}
        if rows and self.placement.float_unread_outputs:
            minmax = {name: self.observers[name].range("minmax") for name in ranges}
            ranges, self.range_choices = choose_ranges(plan, graph, ranges, minmax, rows, self.qtype)
        return ranges

    def warnings(self) -> list[str]:
        result = self.result
        return [
            f"node {name}: bias would overflow int32 in channel(s) {channels}; raised their weight scale"
            for name, channels in result.raised_bias_channels.items()
        ] + [f"node {name}: bias kept float (shape does not broadcast per channel)" for name in result.float_biases]

    def report(self) -> dict:
        """What the latest build quantized, the report's top-level keys."""
        plan = self.result.plan
        return {
            "quantized_nodes": dict(Counter(n.op_type for n in plan.quantized)),
            "fused_activations": len(plan.fused_activation),
            "float_nodes": plan.float_nodes,
            "quantized_tensors": len(plan.tensors),
            **({"int16_tensors": self.int16_tensors()} if plan.int16_nodes else {}),
            "ranges_by_reader_error": self.range_choices,
            **({"float_outputs": self.float_outputs} if self.placement.float_unread_outputs else {}),
            "encodings": {
                name: {"scale": float(e.scale), "zero_point": e.zero_point} for name, e in self.result.encodings.items()
            },
            "warnings": self.warnings(),
            **self._precision_report(),
        }

    def int16_tensors(self) -> list[str]:
        """The tensors of the QDQ model whose Q/DQ pair is int16 in a model of 8-bit activations (layers int16):
        the int16 nodes' own tensors and the requantized copies they read."""
        return [name for name, e in self.result.encodings.items() if e.qtype.name == "int16"]

    def _precision_report(self) -> dict:
        """``layer_precisions``: what the layers table did to each node it matched (kept float, or the weights'
        bits); ``int4_storage``: how 4-bit weights are stored, "int8" containers in this interchange model (the
        onnxruntime target packs them, passes.pack_int4)."""
        result, report = self.result, {}
        if self.recipe.layers:
            floated = {name: "float" for name, why in result.plan.float_nodes.items() if why == FLOAT_REASON}
            table = LayerPrecisions(self.recipe.layers)  # int16 nodes without weights (pools, Adds) too
            int16 = {
                n.name: "int16" for n in result.plan.quantized if n.name in result.plan.int16_nodes and table.int16(n)
            }
            report["layer_precisions"] = floated | int16 | result.layer_precisions
        if 4 in result.weight_bits.values():
            report["int4_storage"] = "int8"
        return report


class FinalizeStage(ir.passes.InPlacePass):
    def __init__(self, channel_scales: dict[str, np.ndarray]):
        super().__init__()
        self.channel_scales = channel_scales

    def call(self, model: ir.Model) -> StageResult:
        common_passes.ClearMetadataAndDocStringPass()(model)
        if self.channel_scales:
            scales = {name: scale.tolist() for name, scale in self.channel_scales.items()}
            model.metadata_props[CHANNEL_SCALES_KEY] = json.dumps(scales)
        return StageResult(model, True)
