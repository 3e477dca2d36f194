"""``edgeq.sensitivity`` and the mixed-precision options of ``edgeq.quantize`` and ``edgeq.convert``.

``sensitivity`` measures the per-layer table (edgeq.mixed.sensitivity) and writes it as JSON and plots. ``choose``
is what quantize and convert call with ``budget=`` or ``max_drop=``: it measures the table on the same float
model and calibration data, picks the layers' precisions (edgeq.mixed.allocation under a size budget, or
edgeq.mixed.accuracy_aware for a metric floor) and returns the recipe with that ``layers`` table, the report
section and the plots; the caller then builds its artifacts from that recipe as usual.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgeq import targets as registry
from edgeq.api.inputs import FloatModel, calibration_data, data_of, float_model, labels_of, recipe_of
from edgeq.data import CalibrationData
from edgeq.errors import RecipeError
from edgeq.io.files import json_text, output_dir, write_bytes_atomic, write_text_atomic
from edgeq.mixed import allocation
from edgeq.mixed.arena import arena_model
from edgeq.mixed.plots import pareto_png, sensitivity_png
from edgeq.mixed.sensitivity import SensitivityTable, measure_sensitivity
from edgeq.mixed.tensor_units import measure_tensor_sensitivity
from edgeq.mixed.workbench import DEFAULT_SAMPLES, Workbench
from edgeq.quantization.recipe import Recipe

# samples each (layer, precision) variant runs on: enough to rank the layers (the chosen mix is measured on all)
SENSITIVITY_SAMPLES = 64
MAX_METRIC_SAMPLES = 1024  # evaluation samples the accuracy-aware mode measures its metric on, at most


@dataclass
class MixedChoice:
    """What ``choose`` decided: the recipe to build, its report section and the plots (file name -> PNG)."""

    recipe: Recipe
    report: dict
    plots: dict[str, bytes] = field(default_factory=dict)


def _accuracy_aware():
    """edgeq.mixed.accuracy_aware, imported on first use: it imports scipy.stats (1.4 s), which only a --max-drop
    search needs, and every convert and quantize imports this module."""
    from edgeq.mixed import accuracy_aware

    return accuracy_aware


def _rule(targets) -> allocation.TargetRule:
    names = [targets] if isinstance(targets, str) else list(targets)
    unknown = [n for n in names if n not in allocation.TARGET_RULES]
    if unknown:
        raise RecipeError(f"mixed precision has no rules for target {unknown[0]!r} (known: {', '.join(allocation.TARGET_RULES)})")
    return allocation.target_rule(names)


def check_options(budget, max_drop, metric, recipe: Recipe | None = None, *, eval_data=None, ray_address=None):
    """Refuse bad mixed-precision options before any work; the Budget (None without one). EVAL_DATA and
    RAY_ADDRESS are refused without a budget or a drop (quantize reads evaluation data for these only)."""
    if budget is None and max_drop is None:
        for flag, value in (("--metric", metric), ("--eval-data", eval_data), ("--ray-address", ray_address)):
            if value is not None:
                raise RecipeError(f"{flag} is for the mixed-precision search: give --budget or --max-drop too")
        return None
    if budget is not None and max_drop is not None:
        raise RecipeError("give --budget or --max-drop, not both")
    if recipe is not None and recipe.layers:
        raise RecipeError("--budget and --max-drop choose the layers table themselves: give no --layer (or recipe layers)")
    if recipe is not None and recipe.mode == "dynamic":
        raise RecipeError("--budget and --max-drop choose among static builds: not with --mode dynamic")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, int | float) or not max_drop >= 0):
        raise RecipeError(f"--max-drop must be a number >= 0, not {max_drop!r}")
    if metric is not None:
        if max_drop is None:
            raise RecipeError("--metric is the measure of --max-drop: give --max-drop too")
        _accuracy_aware().metric_of(metric, np.zeros(1))  # an unknown name or an unimportable function, now
    if budget is None or isinstance(budget, allocation.Budget):
        return budget
    if isinstance(budget, str):
        return allocation.parse_budget(budget)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise RecipeError(f"budget must be text like 'size=1.2MB,arena=96KB' or a size in bytes, not {budget!r}")
    return allocation.Budget(size=budget)


def choose(
    model: ir.Model,
    data: CalibrationData,
    recipe: Recipe,
    *,
    targets=("onnxruntime",),
    evaluation: CalibrationData | None = None,
    labels=None,
    budget: allocation.Budget | int | None = None,
    max_drop: float | None = None,
    metric: str | None = None,
    samples: int = DEFAULT_SAMPLES,
    ray_address: str | None = None,
    progress: bool = False,
) -> MixedChoice:
    """The layers table for BUDGET bytes or a METRIC drop of at most MAX_DROP (see the module docstring)."""
    rule = _rule(targets)
    bench = Workbench.prepare(model, data, recipe, evaluation, samples=samples, progress=progress)
    table = measure_sensitivity(
        bench, rule.precisions, samples=SENSITIVITY_SAMPLES, address=ray_address, progress=progress
    )
    report = {"target_rule": rule.note, "sensitivity": table.to_dict()}
    plots = {"sensitivity.png": sensitivity_png(table)}
    if budget is not None:
        budget = budget if isinstance(budget, allocation.Budget) else allocation.Budget(size=int(budget))
        sizes = allocation.byte_model(bench, table, rule)
        int16 = int16_tensors(bench) if budget.arena is not None else None
        chosen = allocation.allocate(bench, table, budget, rule, sizes, int16)
        if int16 is not None:
            report["int16_sensitivity"] = int16.sensitivity.to_dict()
        front = allocation.predicted_front(table, sizes, rule)
        base = bench.build({})
        measured = [
            {"label": f"uniform {table.base_precision}", "size_bytes": base.size, "sqnr_db": base.sqnr_db},
            {"label": "chosen mix", "size_bytes": chosen.measured.size, "sqnr_db": chosen.measured.sqnr_db},
        ]
        report["budget"] = {**chosen.to_dict(), "predicted_front": front}
        plots["pareto.png"] = pareto_png(front, measured)
        layers = chosen.layers
    else:
        labels = labels[: len(next(iter(bench.feeds.values())))] if labels is not None else None
        found = _accuracy_aware().search(
            bench, table, rule, max_drop=max_drop, metric=metric or "agreement", labels=labels,
            sensitivity_samples=SENSITIVITY_SAMPLES,
        )  # fmt: skip
        report["accuracy_aware"] = found.to_dict()
        layers = found.layers
    return MixedChoice(recipe.updated(layers=layers), report, plots)


def int16_tensors(bench: Workbench) -> allocation.Int16Tensors:
    """What an arena budget chooses among (edgeq.mixed.allocation): the int16 sensitivity of BENCH's tensors, the
    arena model fitted on uniform int8's measured arena, and the TFLite Micro arena of a mix, measured."""
    int16 = bench.calibration(int16=True)
    if [n.name for n in bench.calibrated.model.graph] != [n.name for n in int16.model.graph]:
        raise RecipeError(
            "--budget arena: raising this model to opset 21 (int16 Q/DQ pairs) changes its graph, so its int16 "
            "tensors cannot be chosen together with its layers; give a size budget alone"
        )
    sensitivity = measure_tensor_sensitivity(bench, "int16", samples=SENSITIVITY_SAMPLES)
    tflm = registry.get("tflm")

    def arena_of(layers: dict[str, str]) -> dict:  # the .tflite convert would write for tflm, measured
        return tflm.arena(bench.integer_quantized(layers))

    base = arena_of({})
    model = arena_model(int16.plan, int16.model.graph).fitted(base["arena_bytes"], base["persistent_bytes"])
    return allocation.Int16Tensors(sensitivity, model, lambda layers: arena_of(layers)["arena_bytes"])


def mixed_precision(
    source: FloatModel,
    data: CalibrationData,
    recipe: Recipe,
    *,
    targets=("onnxruntime",),
    eval_data=None,
    labels=None,
    image_spec=None,
    budget=None,
    max_drop: float | None = None,
    metric: str | None = None,
    ray_address: str | None = None,
    progress: bool = False,
) -> MixedChoice | None:
    """``choose`` for quantize and convert when they were given BUDGET (text like "size=1.2MB", or bytes) or
    MAX_DROP; None when neither was given. EVAL_DATA (as the API takes data, or the CalibrationData convert read)
    and LABELS (default: an .npz's "label" key) are what the metric is measured on."""
    budget = check_options(budget, max_drop, metric, recipe)
    if budget is None and max_drop is None:
        return None
    names = [targets] if isinstance(targets, str) else list(targets)
    if budget is not None and budget.arena is not None and not {"tflite", "tflm"} & set(names):
        raise RecipeError("an arena budget is TFLite Micro's tensor arena: convert with --target tflm (or tflite)")
    evaluation = None
    if eval_data is not None:
        evaluation = data_of(eval_data, source.model, image_spec=image_spec, what="evaluation data")
    labels = labels if labels is not None else labels_of(eval_data)
    samples = DEFAULT_SAMPLES
    if max_drop is not None:
        _accuracy_aware().metric_of(metric or "agreement", labels)  # one that needs labels without them, now
        # the metric's floor holds on the whole evaluation data: 64 samples would make one flip 1.6 points
        samples = min((evaluation or data).num_samples or MAX_METRIC_SAMPLES, MAX_METRIC_SAMPLES)
    return choose(
        source.model, data, recipe, targets=targets, evaluation=evaluation, labels=labels, budget=budget,
        max_drop=max_drop, metric=metric, samples=samples, ray_address=ray_address, progress=progress,
    )  # fmt: skip


def write_plots(choice: MixedChoice | None, folder: Path, prefix: str = "") -> list[Path]:
    """CHOICE's plots written into FOLDER as PREFIX + name; the paths."""
    paths = []
    for name, png in (choice.plots if choice is not None else {}).items():
        write_bytes_atomic(folder / f"{prefix}{name}", png)
        paths.append(folder / f"{prefix}{name}")
    return paths


@dataclass
class SensitivityResult:
    """The table, the report written as ``sensitivity.json`` and the files written (JSON and plots)."""

    table: SensitivityTable
    report: dict
    paths: list[Path]


def sensitivity(
    model,
    calib,
    *,
    outdir: str | os.PathLike,
    eval_data=None,
    recipe=None,
    targets=("onnxruntime",),
    samples: int = DEFAULT_SAMPLES,
    pareto: int = 0,
    ray_address: str | None = None,
    image_spec=None,
    example_inputs=None,
    progress: bool = False,
    **options,
) -> SensitivityResult:
    """Measure MODEL's per-layer sensitivity (worst output SQNR with only one layer at float, int8 or int4, and
    HAWQ-V2's Omega) on SAMPLES samples of EVAL_DATA (default: CALIB) and write OUTDIR/sensitivity.json and
    sensitivity.png. With PARETO > 0, also that many mixes under budgets between uniform int4 and the base build,
    built and measured, with the predicted front: pareto.png and the report's ``pareto``. MODEL, CALIB, RECIPE
    and OPTIONS are as for ``edgeq.quantize``; TARGETS set the precisions each layer may take
    (edgeq.mixed.allocation.TARGET_RULES). RAY_ADDRESS: the Ray cluster for the tasks ("serial": none)."""
    if recipe is None and options.get("activation_type") is None:
        options["activation_type"] = "auto"
    if not isinstance(samples, int) or samples < 1:
        raise RecipeError(f"samples must be a positive integer, not {samples!r}")
    if not isinstance(pareto, int) or pareto < 0:
        raise RecipeError(f"pareto must be a number of budgets >= 0, not {pareto!r}")
    recipe = recipe_of(recipe, **options)
    rule = _rule(targets)
    inputs = [p for p in (model, calib, eval_data) if isinstance(p, str | os.PathLike)]
    with output_dir(outdir, *inputs) as folder, float_model(model, example_inputs=example_inputs) as source:
        data = calibration_data(source, calib, recipe, image_spec=image_spec, progress=progress)
        evaluation = data_of(eval_data, source.model, image_spec=image_spec, what="evaluation data") if eval_data is not None else None
        bench = Workbench.prepare(source.model, data, recipe, evaluation, samples=samples, progress=progress)
        table = measure_sensitivity(bench, rule.precisions, address=ray_address, progress=progress)
        report = {"input": source.label, "recipe": recipe.to_dict(), "target_rule": rule.note, **table.to_dict()}
        plots = {"sensitivity.png": sensitivity_png(table)}
        if pareto:
            report["pareto"], plots["pareto.png"] = _pareto(bench, table, rule, pareto)
        paths = write_plots(MixedChoice(recipe, report, plots), folder)
        write_text_atomic(folder / "sensitivity.json", json_text(report) + "\n")
        paths.append(folder / "sensitivity.json")
    return SensitivityResult(table, report, paths)


def _pareto(bench: Workbench, table: SensitivityTable, rule: allocation.TargetRule, points: int):
    """POINTS budgets between the smallest mix and the base build, each allocated, built and measured."""
    sizes = allocation.byte_model(bench, table, rule)
    base = bench.build({})
    smallest = bench.build({layer.name: "int4" for layer in table.layers}) if "int4" in rule.precisions else base
    measured = [
        {"label": f"uniform {table.base_precision}", "size_bytes": base.size, "sqnr_db": base.sqnr_db},
        {"label": "uniform int4", "size_bytes": smallest.size, "sqnr_db": smallest.sqnr_db},
    ]
    for budget in np.linspace(smallest.size, base.size, points + 2)[1:-1]:
        chosen = allocation.allocate(bench, table, int(budget), rule, sizes)
        measured.append(
            {"label": f"milp at {int(budget)} B", "size_bytes": chosen.measured.size, "sqnr_db": chosen.measured.sqnr_db,
             "budget_bytes": int(budget), "precisions": chosen.counts}
        )  # fmt: skip
    front = allocation.predicted_front(table, sizes, rule)
    rounded = [{**m, "sqnr_db": round(m["sqnr_db"], 3)} for m in measured]
    return {"measured": rounded, "predicted_front": front}, pareto_png(front, measured)
