"""``edgeq.convert``: calibrate once, build every target's artifacts, validate each by running it.

The float model is calibrated once (edgeq.pipeline); each target asks the conversion for the QDQ model of the
activation type it needs, built once per type, so with several targets every artifact carries the same scales.
Targets come from the registry (edgeq.targets) by name; each writes its artifacts, then validates them on the
evaluation data against the float model. Artifacts that implement an integer TFLite graph (the .tflite, the
TFLite Micro sources, the integer-only .onnx) are then checked against edgeq's integer reference on the first
``verify_samples`` evaluation samples (edgeq.reports.verify, outputs only: `edgeq verify` also checks every op),
and name the nodes that add the most noise (``largest_losses``, from a per-layer comparison with the float model
on LOSS_SAMPLES samples).
Everything goes into ``<outdir>/report.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq import targets as registry
from edgeq.api.inputs import (
    SYNTHETIC,
    calibration_data,
    data_of,
    float_model,
    labels_of,
    recipe_of,
    refuse_unused_image_spec,
)
from edgeq.api.mixed import check_options, mixed_precision, write_plots
from edgeq.data import CalibrationData
from edgeq.errors import DataError, OutputError, RecipeError
from edgeq.io.files import check_output_path, json_text, staged_output, write_text_atomic
from edgeq.io.onnx_model import load_model
from edgeq.mixed.int16_choice import Int16Choice, choose_int16, is_transformer
from edgeq.pipeline import Pipeline, Quantized
from edgeq.reports import compare as comparing
from edgeq.reports.html import write_report
from edgeq.reports.page import report_page
from edgeq.reports.verify import verify
from edgeq.targets.target import Build, Emitted, Option, Target


@dataclass
class ConvertResult:
    """What a conversion wrote: per target its report (``artifacts``, what it built, ``validation``, and
    ``verification`` against the integer reference where it has one), the whole report and where it is, the files
    of an earlier run it wrote over (``replaced``) and the earlier artifacts of the same model it did not write
    again and deleted, with the staging folders of killed runs it removed (``removed``)."""

    outdir: Path
    targets: dict[str, dict]
    report: dict
    report_path: Path
    replaced: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    @property
    def artifacts(self) -> list[Path]:
        return [Path(p) for p in self.report["artifacts"]]


def _targets(names, recipe) -> list[Target]:
    """The targets NAMES name; "all" is every target but those built only on request (onnxruntime-integer)."""
    names = [names] if isinstance(names, str) else list(names)
    everyday = [t.name for t in registry.registered() if not t.on_request]
    expanded = [n for name in names for n in (everyday if name == "all" else [name])]
    chosen = [registry.get(name) for name in dict.fromkeys(expanded)]
    for target in chosen:
        if recipe.mode not in ("auto", *target.modes):
            takers = [t.name for t in registry.registered() if recipe.mode in t.modes]
            raise RecipeError(
                f"the {target.name} target takes mode static; mode {recipe.mode} is for the {', '.join(takers)} target"
            )
        if recipe.activation_type not in ("auto", *target.activation_types):
            takers = [t.name for t in registry.registered() if recipe.activation_type in t.activation_types]
            raise RecipeError(
                f"the {target.name} target takes {' or '.join(target.activation_types)} activations; "
                f"activation type {recipe.activation_type} is for the {', '.join(takers)} target(s)"
            )
    return chosen


def convert(
    model,
    calib,
    *,
    outdir: str | os.PathLike,
    targets=("onnxruntime",),
    eval_data=None,
    labels=None,
    recipe=None,
    verify_samples: int = 4,
    report_html: str | os.PathLike | None = None,
    example_inputs=None,
    image_spec=None,
    budget=None,
    max_drop: float | None = None,
    metric: str | None = None,
    ray_address: str | None = None,
    replace_nonfinite: bool = False,
    progress: bool = False,
    **options,
) -> ConvertResult:
    """Quantize MODEL for TARGETS (names from ``edgeq.targets.names()``; "all" is every target but
    onnxruntime-integer, which is built when named), write every artifact into OUTDIR,
    validate each on EVAL_DATA (default: the calibration data; LABELS, or an .npz's "label" key, add accuracy) and
    check the integer artifacts against the integer reference on VERIFY_SAMPLES samples.

    MODEL, CALIB, RECIPE and the recipe OPTIONS are as for ``edgeq.quantize``; without an activation type the
    onnxruntime target picks the one onnxruntime fuses ("auto"). OPTIONS also take each target's own options
    (``io="float"``, ``precision="float"``, ``ort_format=True``: ``Target.options``). Returns a ConvertResult; writes
    ``report.json`` into OUTDIR and, with REPORT_HTML (an .html path), the HTML report on the artifacts
    (``edgeq.report``). A ``recipe`` without an activation type gives int8 activations, as in ``edgeq.quantize``.
    BUDGET, MAX_DROP, METRIC and RAY_ADDRESS choose each weighted layer's precision as in ``edgeq.quantize``,
    measured on the evaluation data, among the precisions every one of TARGETS allows (edgeq.mixed.allocation);
    the report's ``mixed_precision`` says what was chosen, and OUTDIR gets its plots (``mixed_*.png``).
    REPLACE_NONFINITE as for ``edgeq.quantize`` (the report's ``nonfinite_replaced``).
    Raises an ``EdgeqError`` subclass for any bad input.
    """
    declared = {o.name: o for t in registry.registered() for o in t.options}
    given = {k: _option(declared[k], v) for k, v in options.items() if k in declared}
    recipe_options = {k: v for k, v in options.items() if k not in declared}
    if recipe is None and recipe_options.get("activation_type") is None:
        recipe_options["activation_type"] = "auto"
    synthetic = isinstance(calib, str) and calib == SYNTHETIC
    refuse_unused_image_spec(image_spec, calib, eval_data)
    recipe = recipe_of(recipe, synthetic=synthetic, **recipe_options)
    chosen = _targets(targets, recipe)
    check_options(budget, max_drop, metric, recipe, ray_address=ray_address)
    inputs = [p for p in (model, calib, eval_data) if isinstance(p, str | os.PathLike) and p != SYNTHETIC]
    # every artifact is staged and validated before any moves into OUTDIR: a failed conversion leaves it as it was
    with staged_output(outdir, *inputs) as staged:
        if report_html is not None:
            if Path(report_html).suffix not in (".html", ".htm"):
                raise OutputError(f"report {report_html} must be an .html file")
            check_output_path(report_html, *inputs)
        with float_model(model, example_inputs=example_inputs, replace_nonfinite=replace_nonfinite) as source:
            data = calibration_data(source, calib, recipe, image_spec=image_spec, progress=progress)
            evaluation = (
                data_of(eval_data, load_model(source.path), image_spec=image_spec, what="evaluation data")
                if eval_data is not None
                else data
            )
            labels = _labels(labels if labels is not None else labels_of(eval_data), evaluation)
            mixed = mixed_precision(
                source, data, recipe, targets=[t.name for t in chosen], eval_data=evaluation, labels=labels,
                budget=budget, max_drop=max_drop, metric=metric, ray_address=ray_address, progress=progress,
            )  # fmt: skip
            recipe = mixed.recipe if mixed is not None else recipe
            pipeline = Pipeline(recipe, progress=progress)
            calibrated = pipeline.calibrate(source.model, data)
            _check_fixed_shapes(calibrated.fixed_input_shapes, evaluation)
            built: dict[tuple[str, int | None, bool, str | None], Quantized] = {}

            def quantized(
                activation_type: str, gemm_pair_limit: int | None = None, onnxruntime: bool = False, mode=None
            ) -> Quantized:
                key = (activation_type, gemm_pair_limit, onnxruntime, mode)
                if key not in built:
                    built[key] = pipeline.quantize(calibrated, activation_type, gemm_pair_limit, onnxruntime, mode)
                return built[key]

            choice = _int16_choice(source.path, data, recipe, chosen, calibrated, progress) if mixed is None else None
            build = Build(
                source.name, staged.folder, source.path, recipe, quantized, evaluation, labels, given,
                targets=tuple(target.name for target in chosen), integer=choice.quantized if choice else None,
            )  # fmt: skip
            emitted = {target.name: target.emit(build) for target in chosen}
            results = {}
            for target in chosen:
                results[target.name] = {**emitted[target.name].to_dict(), "validation": target.validate(build, emitted[target.name])}
            for target_names, verification in _verifications(emitted, evaluation, verify_samples):
                for name in target_names:
                    results[name]["verification"] = verification
            for name, losses in _largest_losses(source.path, emitted, evaluation).items():
                results[name]["largest_losses"] = losses
            results = staged.final(results)
            report = {"input": source.label, "recipe": recipe.to_dict(), "targets": results}
            if source.replaced:
                report["nonfinite_replaced"] = source.replaced
            if mixed is not None:
                report["mixed_precision"] = mixed.report
                write_plots(mixed, staged.folder, "mixed_")
            if calibrated.fixed_input_shapes:
                report["fixed_input_shapes"] = calibrated.fixed_input_shapes
            report["artifacts"] = list(dict.fromkeys(a for result in results.values() for a in result["artifacts"]))
            write_text_atomic(staged.folder / REPORT_NAME, json_text(report) + "\n")
            if report_html is not None:
                shown = [
                    str(path)
                    for result in emitted.values()
                    for path in result.artifacts
                    if path.name.endswith((".onnx", ".tflite")) and ".float." not in path.name
                ]
                page = report_page(source.path, list(dict.fromkeys(shown)), evaluation, runs=20, saved=report)
                write_report(report_html, staged.final(page))  # names the artifacts where the commit puts them
            written = {path.name for path in staged.folder.iterdir()}
            replaced, removed = staged.commit(_stale_artifacts(staged.out, source.name, written))
        return ConvertResult(staged.out, results, report, staged.out / REPORT_NAME, replaced, removed)


REPORT_NAME = "report.json"


def _int16_choice(
    float_path: Path, data: CalibrationData, recipe, targets: list[Target], calibrated, progress: bool
) -> Int16Choice | None:
    """The int16 tensors of the TFLite targets' 8-bit model, chosen by measured error (edgeq.mixed.int16_choice),
    when a target takes them, the recipe leaves the activation type to edgeq (and names no int16 layer) and the
    model is a transformer, where int8 activations lose its function; CNNs keep int8, which XNNPACK runs."""
    if not any(t.takes_int16_choice for t in targets) or recipe.activation_type != "auto" or recipe.mode == "dynamic":
        return None
    if "int16" in recipe.layers.values() or not is_transformer(calibrated.model.graph):
        return None
    return choose_int16(load_model(float_path), data, recipe, progress=progress)


def _stale_artifacts(out: Path, stem: str, written: set[str]) -> list[Path]:
    """The files in OUT that some target names its artifacts for a model named STEM (``artifact_names``) and this
    conversion did not write: an earlier run's, which the new report.json would not describe.
    required_operators.config, which onnxruntime does not name after the model, goes with a stale .ort."""
    names = dict.fromkeys(name for target in registry.registered() for name in target.artifact_names(stem))
    stale = [out / name for name in names if name not in written and (out / name).is_file()]
    if any(path.suffix == ".ort" for path in stale) and ORT_CONFIG not in written:
        stale.append(out / ORT_CONFIG)
    return stale


ORT_CONFIG = "required_operators.config"


LOSS_SAMPLES = 8  # samples the per-layer comparison runs on: enough to rank the layers, cheap next to validation


def _largest_losses(float_path: Path, emitted: dict[str, Emitted], data: CalibrationData) -> dict[str, list]:
    """For each target whose artifact keeps the float model's tensors (.tflite, QDQ .onnx): the nodes that add the
    most noise, from a per-layer comparison with the float model (edgeq.reports.compare.largest_losses)."""
    artifacts = {
        name: result.artifacts[0]
        for name, result in emitted.items()
        if result.artifacts[0].name.endswith((".tflite", ".qdq.onnx"))
    }
    if not artifacts:
        return {}
    # one sample at a time: every tensor of the float model is exposed (MobileNetV2: 1.2 GB at 8); the float
    # model is preprocessed and run once for all the artifacts
    by_path = comparing.compare_artifacts(float_path, list(artifacts.values()), data.head(LOSS_SAMPLES), batch_size=1)
    return {name: by_path[artifact]["largest_losses"] for name, artifact in artifacts.items()}


def _check_fixed_shapes(fixed: dict[str, dict], evaluation) -> None:
    """The artifacts take the shapes calibration fixed: the evaluation samples must have them."""
    shapes = evaluation.sample_shapes() if fixed else {}
    for name, record in fixed.items():
        if name in shapes and list(shapes[name]) != record["shape"][1:]:
            raise DataError(
                f"evaluation data: input {name!r} has samples of shape {list(shapes[name])}, but its shape was "
                f"fixed to {record['shape']} from {record['from']} (give --input-shape, or data of one shape)"
            )


def _option(option: Option, value):
    """VALUE for OPTION, checked: one of its choices, or a yes/no flag."""
    if value is None:
        return None
    if option.choices is None and not isinstance(value, bool):
        raise RecipeError(f"option {option.name} is a flag: give True or False, not {value!r}")
    if option.choices is not None and value not in option.choices:
        raise RecipeError(f"option {option.name} must be one of {', '.join(option.choices)}, not {value!r}")
    return value


def _labels(labels, data: CalibrationData):
    """LABELS as an array with at least one label per evaluation sample (None without labels)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if data.num_samples is not None and len(labels) < data.num_samples:
        raise DataError(f"evaluation data: {len(labels)} labels for {data.num_samples} samples")
    return labels


def _verifications(emitted: dict[str, Emitted], data, samples: int):
    """(target names, verification) for each integer graph the conversion's artifacts implement: the main artifact
    of each target that implements it, run against the reference on SAMPLES samples."""
    if not samples:
        return
    groups: dict[int, tuple[object, list[str]]] = {}
    for name, result in emitted.items():
        if result.integer_graph is not None:
            groups.setdefault(id(result.integer_graph), (result.integer_graph, []))[1].append(name)
    for graph, names in groups.values():
        paths = list(dict.fromkeys(emitted[name].artifacts[0] for name in names))
        yield names, verify(paths, data, samples=samples, graph=graph, per_op=False)
