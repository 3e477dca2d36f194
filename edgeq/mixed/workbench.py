"""What every mixed-precision search measures against: the base build, the float outputs, and mix builds.

``Workbench.prepare`` calibrates the float model once with the pipeline and quantizes it with the base recipe for
ONNX Runtime, as ``edgeq quantize`` does (the activation type and weight-pair bound of the recipe's ``cpu``), runs
the float model once on the measurement samples (the evaluation data, else the calibration data, at most
``samples`` of them) and keeps its outputs. ``build(layers)`` builds a mix (``Recipe.layers``: node name ->
precision) with the pipeline, from the same float model and calibration data, and measures it: the worst output
SQNR against float on the samples, and the real size of ONNX Runtime's model (4-bit weights packed as INT4,
passes.pack_int4, as `edgeq quantize` writes it).

The searches measure many builds, so the workbench builds them without the passes in SEARCH_SKIPPED_PASSES:
AdaRound learns every layer's rounding (MobileNetV2: 1-4 minutes a build), which a search of tens of builds cannot
afford. It ranks mixes by their rounding-to-nearest builds, and the caller builds the chosen mix with the whole
recipe, AdaRound included (edgeq.api.mixed.choose returns the user's recipe with the chosen layers). AdaRound is
what makes 4-bit layers pay: MobileNetV2's milp mix at 0.7x uniform int8's size agreed with fp32 on 73.0% of
the evaluation views rounded to nearest and on 82.4% with AdaRound (uniform int8: 83.2%; docs/mixed-precision.md
§4, which also has a model where AdaRound lost).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgeq.data import CalibrationData
from edgeq.io.onnx_model import clone_model, model_bytes
from edgeq.io.session import run_in_chunks, session
from edgeq.measure.metrics import float_pairs, sqnr_db
from edgeq.passes.pack_int4 import pack_int4_weights
from edgeq.pipeline import Calibrated, Pipeline
from edgeq.quantization.cpus import Cpu, resolve_cpu
from edgeq.quantization.recipe import Recipe
from edgeq.scale.tasks import task_threads

DEFAULT_SAMPLES = 64
SEARCH_SKIPPED_PASSES = ("adaround",)
BATCH = 16


def worst_sqnr(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """The lowest SQNR (dB) over the float outputs: the output a mix hurts most decides."""
    return min(float(sqnr_db(r, t)) for r, t in float_pairs(reference, outputs))


def run_model(model: bytes | ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """MODEL's outputs on FEEDS, BATCH samples a run: a whole evaluation set in one run would hold every
    activation of every sample at once (MobileNetV2, 256 images: 2.5 GB, which the allocator keeps)."""
    runner = session(model, threads=task_threads())  # 1 inside a Ray task, which holds one CPU
    names = [o.name for o in runner.get_outputs()]
    samples = len(next(iter(feeds.values())))
    parts = [
        run_in_chunks(runner, names, {name: array[start : start + BATCH] for name, array in feeds.items()})
        for start in range(0, samples, BATCH)
    ]
    return [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]


@dataclass
class Measured:
    """A built mix: its model, real size in bytes and worst output SQNR on the samples."""

    model: ir.Model
    size: int
    sqnr_db: float
    outputs: list[np.ndarray] = field(repr=False)


@dataclass
class Workbench:
    source: ir.Model  # the user's float model as loaded (each build preprocesses its own copy)
    data: CalibrationData
    recipe: Recipe
    calibrated: Calibrated
    base: ir.Model  # the base recipe's QDQ model
    activation_type: str
    cpu: Cpu
    feeds: dict[str, np.ndarray]
    reference: list[np.ndarray]
    progress: bool = False
    _builds: dict[tuple, Measured] = field(default_factory=dict)
    _int16_calibrated: Calibrated | None = None

    @classmethod
    def prepare(
        cls,
        model: ir.Model,
        data: CalibrationData,
        recipe: Recipe,
        evaluation: CalibrationData | None = None,
        *,
        samples: int = DEFAULT_SAMPLES,
        progress: bool = False,
    ) -> Workbench:
        """The base build of MODEL (not changed) calibrated on DATA with RECIPE (without SEARCH_SKIPPED_PASSES),
        measured on SAMPLES samples of EVALUATION (default: DATA)."""
        recipe = search_recipe(recipe)
        cpu = resolve_cpu(recipe.cpu)
        activation_type = cpu.activation_type if recipe.activation_type == "auto" else recipe.activation_type
        pipeline = Pipeline(recipe, progress=progress)
        calibrated = pipeline.calibrate(clone_model(model), data)
        limit = _pair_limit(cpu, activation_type, recipe)
        base = pipeline.quantize(calibrated, activation_type, limit, onnxruntime=True).model
        feeds = (evaluation if evaluation is not None else data).head(samples)
        feeds = next(iter(feeds.batches(feeds.num_samples)))
        reference = run_model(calibrated.model, feeds)
        bench = cls(model, data, recipe, calibrated, base, activation_type, cpu, feeds, reference, progress)
        bench._builds[()] = bench.measure(clone_model(base), recipe)
        return bench

    @property
    def base_precision(self) -> str:
        return f"int{self.recipe.weight_bits}"

    def measure(self, model: ir.Model, recipe: Recipe) -> Measured:
        """MODEL (built with RECIPE; its 4-bit weights are packed in place) on the samples, and its size."""
        pack_int4_weights(model, recipe)
        serialized = model_bytes(model)
        outputs = run_model(serialized, self.feeds)
        return Measured(model, len(serialized), worst_sqnr(self.reference, outputs), outputs)

    def build(self, layers: dict[str, str]) -> Measured:
        """The mix LAYERS (node -> precision) built by the pipeline and measured."""
        key = tuple(sorted(layers.items()))
        if key not in self._builds:
            self._builds[key] = self.measure(self.quantized(layers), self.recipe.updated(layers=dict(layers)))
        return self._builds[key]

    def quantized(self, layers: dict[str, str]) -> ir.Model:
        """The QDQ model of the mix LAYERS as the pipeline builds it (not measured, not kept)."""
        recipe = self.recipe.updated(layers=dict(layers))
        pipeline = Pipeline(recipe, progress=self.progress)
        limit = _pair_limit(self.cpu, self.activation_type, recipe)
        calibrated = self.calibration(int16=recipe.int16_layers)
        try:
            # weight bits change no plan, and a float layer (planned like an exclusion) quantizes a subset of
            # the tensors the base build calibrated: the base calibration serves (MobileNetV2: 2.3 GB and
            # several seconds less per build), unless quantized-phase passes would read the base plan
            if "float" in layers.values() and recipe.passes:
                raise KeyError("passes")
            return pipeline.quantize(calibrated, self.activation_type, limit, onnxruntime=True).model
        except KeyError:  # a tensor the base build did not calibrate
            calibrated = pipeline.calibrate(clone_model(self.source), self.data)
            return pipeline.quantize(calibrated, self.activation_type, limit, onnxruntime=True).model

    def integer_quantized(self, layers: dict[str, str]) -> ir.Model:
        """The QDQ model of the mix LAYERS as the TFLite targets lower it: int8 activations, Q/DQ pairs placed for
        the integer graph, not for ONNX Runtime (edgeq.targets' Build.integer_quantized)."""
        recipe = self.recipe.updated(layers=dict(layers))
        return Pipeline(recipe, progress=False).quantize(self.calibration(int16=recipe.int16_layers), "int8").model

    def calibration(self, *, int16: bool = False) -> Calibrated:
        """The calibrated float model builds start from; with INT16, the one raised to opset 21 that int16 Q/DQ
        pairs need (calibrated once, on first use). Preprocessing names the nodes after raising the opset, so
        a layers table naming int16 nodes names the nodes of this one."""
        if not int16:
            return self.calibrated
        if self._int16_calibrated is None:
            pipeline = Pipeline(self.recipe.updated(activation_type="int16"), progress=self.progress)
            self._int16_calibrated = pipeline.calibrate(clone_model(self.source), self.data)
        return self._int16_calibrated


def search_recipe(recipe: Recipe) -> Recipe:
    """RECIPE without the passes a search skips (SEARCH_SKIPPED_PASSES)."""
    kept = [p for p in recipe.passes if p not in SEARCH_SKIPPED_PASSES]
    return recipe if kept == list(recipe.passes) else recipe.updated(passes=kept)


def _pair_limit(cpu: Cpu, activation_type: str, recipe: Recipe) -> int | None:
    """The weight-pair bound `edgeq quantize` gives RECIPE's weights on CPU (edgeq.quantization.cpus)."""
    return None if activation_type == "int16" else cpu.pair_limit(recipe.widest_weight_bits)
