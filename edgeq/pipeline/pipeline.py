"""The quantization pipeline: a recipe's stages, run as onnx_ir passes by PassManagers, and one report of them all.

    float phase       preprocess -> [equalize] -> [smooth-quant] -> plan -> calibrate  (Pipeline.calibrate, once)
    quantized phase   quantize -> [range-search] -> [adaround] -> [bias-correction]
                      -> [dyadic] -> finalize                                        (Pipeline.quantize, per type)
    dynamic mode      preprocess -> [float passes] -> plan; dynamic -> finalize      (no calibration: ONNX
                      Runtime quantizes each product's input per run, passes.insert_dynamic)

Bracketed stages are the optional passes, edgeq.passes.<name>, each built by its module's ``stage(context)``
from the recipe (passes/stage.py); the fixed stages are in edgeq.pipeline.stages. Each phase is one
``onnx_ir.passes.PassManager`` over ``Stage`` wrappers that keep every stage's typed result and wall time, and
the report is built from those records alone: ``report["stages"][name]`` holds each stage's seconds and
summary, in the order they ran.

Calibration is the expensive step and does not depend on the activation type (int8 and uint8 encodings of one
range share the scale; the zero point moves by 128), so ``calibrate`` runs once and ``quantize`` can be called
for several activation types, as the ONNX Runtime target does to pick the one it fuses, and with other recipes
whose float phase is the same (their weight options, range method and quantized-phase passes may differ).
"""

from __future__ import annotations

import importlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx_ir as ir

from edgeq.calibration.observers import TensorObserver
from edgeq.data import CalibrationData
from edgeq.errors import RecipeError
from edgeq.io.onnx_model import clone_model
from edgeq.passes.insert_dynamic import InsertDynamicPass
from edgeq.passes.limit_weight_pairs import LimitWeightPairsPass
from edgeq.passes.preprocess import PreprocessPass
from edgeq.passes.raise_opset import INT16_QDQ_OPSET, default_opset
from edgeq.passes.stage import StageContext, StageResult, failing_cause
from edgeq.pipeline.stages import (
    CalibrateStage,
    FinalizeStage,
    PlanStage,
    QuantizeStage,
)
from edgeq.quantization.placement import onnxruntime_placement
from edgeq.quantization.plan import QuantPlan
from edgeq.quantization.qparams import ACTIVATION_TYPES, range_method
from edgeq.quantization.recipe import PASS_ORDER, Recipe


class Stage(ir.passes.PassBase):
    """A named stage of the pipeline: runs PASS_ and keeps its result and wall time for the report."""

    def __init__(self, name: str, pass_: ir.passes.PassBase):
        super().__init__()
        self.name, self.pass_ = name, pass_
        self.result: StageResult | None = None
        self.seconds = 0.0

    @property
    def in_place(self) -> bool:
        return self.pass_.in_place

    @property
    def changes_input(self) -> bool:
        return self.pass_.changes_input

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        start = time.perf_counter()
        self.result = self.pass_(model)
        self.seconds = time.perf_counter() - start
        return self.result

    def record(self) -> dict:
        """The stage's summary and its wall time (which replaces any time the summary gives)."""
        summary = self.result.summary() if isinstance(self.result, StageResult) else {}
        return {**summary, "seconds": round(self.seconds, 3)}


@dataclass
class Calibrated:
    """The preprocessed float model, its plan and the statistics of every tensor the plan calibrates."""

    model: ir.Model
    data: CalibrationData
    recipe: Recipe
    plan: QuantPlan
    observers: dict[str, TensorObserver]
    stages: list[Stage] = field(default_factory=list)
    # weight scales by (layer, scale options): the same for every activation type and rebuild, and the weights'
    # clipping search is the costliest part of a build (MobileNetV2: 1.3 s of 1.8)
    scale_cache: dict[tuple, np.ndarray] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def fixed_input_shapes(self) -> dict[str, dict]:
        """Inputs whose dynamic dimensions preprocessing fixed: name -> {"shape": [...], "from": ...}."""
        return self.stages[0].result.fixed

    @property
    def channel_scales(self) -> dict[str, np.ndarray]:
        """Per-channel factors s of the tensors a float-phase pass left as original / s (equalization's)."""
        scales: dict[str, np.ndarray] = {}
        for stage in self.stages:
            scales.update(getattr(stage.result, "channel_scales", {}))
        return scales


class Quantized(NamedTuple):
    """A QDQ model and the report of every stage that made it."""

    model: ir.Model
    report: dict


def _run(stages: list[Stage], model: ir.Model) -> ir.Model:
    """STAGES on MODEL with one PassManager; a failing stage's own exception is re-raised, not PassError's."""
    try:
        return ir.passes.PassManager(stages)(model).model
    except ir.passes.PassError as exc:
        raise failing_cause(exc) from None


def _optional(phase: str, context: StageContext) -> Iterator[Stage]:
    """The recipe's optional passes of PHASE, in pipeline order (passes/stage.py)."""
    for name in PASS_ORDER:
        module = importlib.import_module(f"edgeq.passes.{name.replace('-', '_')}")
        if module.PHASE == phase and (pass_ := module.stage(context)) is not None:
            yield Stage(name, pass_)


class Pipeline:
    """RECIPE's stages (see the module docstring). ``progress`` shows progress bars on long stages."""

    def __init__(self, recipe: Recipe, *, progress: bool = True):
        self.recipe = recipe
        self.progress = progress

    def calibrate(self, model: ir.Model, data: CalibrationData) -> Calibrated:
        """The float phase, on MODEL in place: preprocess, the float-phase passes, plan and calibrate on DATA."""
        context = StageContext(self.recipe, data, self.progress)
        plan = PlanStage(self.recipe)
        calibrate = CalibrateStage(plan, data, self.recipe, progress=self.progress)
        stages = [
            Stage(
                "preprocess",
                PreprocessPass(
                    self.recipe.input_shapes,
                    data.sample_shapes(),
                    int16=self.recipe.activation_type == "int16" or self.recipe.int16_layers,
                ),
            ),
            *_optional("float", context),
            Stage("plan", plan),
            # dynamic quantization measures each input as it runs: no ranges to collect
            *([Stage("calibrate", calibrate)] if self.recipe.mode != "dynamic" else []),
        ]
        _run(stages, model)
        observers = stages[-1].result.observers if self.recipe.mode != "dynamic" else {}
        return Calibrated(model, data, self.recipe, plan.plan, observers, stages)

    def quantize(
        self,
        calibrated: Calibrated,
        activation_type: str | None = None,
        gemm_pair_limit: int | None = None,
        onnxruntime: bool = False,
        mode: str | None = None,
    ) -> Quantized:
        """The quantized phase on a copy of CALIBRATED's model, with activations of ACTIVATION_TYPE (default: the
        recipe's) and GEMM_PAIR_LIMIT on the weights of the layers ONNX Runtime runs as GEMMs
        (edgeq.quantization.cpus), Q/DQ pairs placed for ONNX Runtime if ONNXRUNTIME
        (edgeq.quantization.placement): the QDQ model and the report of both phases. With MODE (default: the
        recipe's) "dynamic", the dynamically quantized model instead (passes.insert_dynamic; ONNX Runtime only)."""
        if (mode or self.recipe.mode) == "dynamic":
            return self._dynamic(calibrated, gemm_pair_limit)
        qtype = ACTIVATION_TYPES[activation_type or self.recipe.activation_type]
        int16 = qtype.name == "int16" or self.recipe.int16_layers
        if int16 and default_opset(calibrated.model) < INT16_QDQ_OPSET:
            raise RecipeError("int16 activations need a recipe that asks for them (the model is raised to opset 21)")
        placement = onnxruntime_placement(calibrated.model.graph) if onnxruntime else None
        quantize = QuantizeStage(
            calibrated.observers,
            self.recipe,
            qtype,
            gemm_pair_limit,
            scale_cache=calibrated.scale_cache,
            placement=placement,
        )
        context = StageContext(
            self.recipe,
            calibrated.data,
            self.progress,
            float_model=calibrated.model,
            plan=calibrated.plan,
            rebuild=quantize.rebuild,
        )
        stages = [
            Stage("quantize", quantize),
            *_optional("quantized", context),
            *([Stage("weight-pairs", LimitWeightPairsPass(gemm_pair_limit))] if gemm_pair_limit else []),
            Stage("finalize", FinalizeStage(calibrated.channel_scales)),
        ]
        model = _run(stages, calibrated.model)
        report = {
            "activation_type": qtype.name,
            **({"gemm_pair_limit": gemm_pair_limit} if gemm_pair_limit is not None else {}),
            **({"placement": placement.to_dict()} if placement is not None and placement.float_nodes else {}),
            "stages": {stage.name: stage.record() for stage in [*calibrated.stages, *stages]},
            **quantize.report(),
            "calibration": {
                "samples": calibrated.data.num_samples,
                "method": range_method(self.recipe.calib_method, qtype),
                "seconds": round(calibrated.seconds, 3),
            },
        }
        return Quantized(model, report)

    def _dynamic(self, calibrated: Calibrated, gemm_pair_limit: int | None) -> Quantized:
        stages = [
            Stage("dynamic", InsertDynamicPass(self.recipe, gemm_pair_limit)),
            Stage("finalize", FinalizeStage(calibrated.channel_scales)),
        ]
        model = _run(stages, clone_model(calibrated.model))  # the calibrated model serves every build
        result = stages[0].result
        report = {
            "mode": "dynamic",
            "activation_type": "uint8",  # DynamicQuantizeLinear's, per run
            **({"gemm_pair_limit": gemm_pair_limit} if gemm_pair_limit is not None else {}),
            "stages": {stage.name: stage.record() for stage in [*calibrated.stages, *stages]},
            "quantized_nodes": dict(Counter(result.quantized.values())),
            "float_nodes": {**calibrated.plan.float_nodes, **result.kept_float},
            "warnings": [],
        }
        return Quantized(model, report)

    def run(self, model: ir.Model, data: CalibrationData, activation_type: str | None = None) -> Quantized:
        """Both phases: MODEL (preprocessed in place) calibrated on DATA and quantized."""
        return self.quantize(self.calibrate(model, data), activation_type)
