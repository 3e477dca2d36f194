"""What the Python API accepts, turned into what the pipeline and the targets take.

* A model: a path to an .onnx file, an ``onnx.ModelProto``, or a ``torch.nn.Module`` with ``example_inputs`` (a
  tensor or a tuple of tensors; exported to ONNX first, edgeq.api.export). In-memory models are written to a
  temporary folder for the call, because validation and reports run model files.
* Data: a path or source string as the CLI takes it (an .npz, an image folder with ``image_spec``,
  'module:function'), ``"synthetic"`` for calibration (data distilled from the model's BatchNorm statistics), a
  numpy array (a single-input model, samples on the first axis), a dict of input name -> array, a callable
  returning an iterable of samples or batches (called again for every pass over the data), an iterable of feed
  dicts or arrays (a generator is read once and kept in memory), or a ``CalibrationData``.
* A recipe: a ``Recipe``, a TOML file, a dict of recipe options, or None; keyword options override it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.calibration.synthetic import distill
from edgeq.data import (
    ArrayData,
    CalibrationData,
    CallableData,
    ImageSpec,
    InputSpec,
    input_specs,
    open_data,
    parse_image_spec,
)
from edgeq.errors import DataError, ModelError, RecipeError
from edgeq.io.onnx_model import clone_model, load_model, save_model
from edgeq.passes.preprocess import preprocess
from edgeq.quantization.plan import refuse_control_flow, refuse_quantized
from edgeq.quantization.recipe import Recipe, load_recipe

SYNTHETIC = "synthetic"


@dataclass
class FloatModel:
    """The user's float model: in memory (``model``), as a file (``path``, temporary for an in-memory or repaired
    model), by name (the artifacts' stem) and as the report names it (``label``: the path, or what was given);
    ``replaced``: the tensors whose NaN or infinite values were replaced (edgeq.io.model_checks.replace_nonfinite)."""

    model: ir.Model
    path: Path
    name: str
    label: str
    replaced: list[dict] = field(default_factory=list)


@contextmanager
def float_model(model, *, example_inputs=None, replace_nonfinite: bool = False) -> Iterator[FloatModel]:
    """MODEL (see the module docstring) for the duration of the block. With REPLACE_NONFINITE, NaN and infinite
    weights are replaced instead of refused, and the repaired model written to a temporary file: the float model
    that calibration, validation and reports run."""
    if isinstance(model, str | os.PathLike) and not replace_nonfinite:
        path = Path(model)
        yield FloatModel(load_model(path), path, path.stem, str(path))
        return
    with tempfile.TemporaryDirectory(prefix="edgeq-") as tmp:
        if isinstance(model, str | os.PathLike):
            path = Path(model)
            name, label = path.stem, str(path)
        elif isinstance(model, onnx.ModelProto):
            name = model.graph.name or "model"
            label = f"onnx.ModelProto {name!r}"
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(model, path)
        elif _is_torch_module(model):
            if example_inputs is None:
                raise ModelError("a torch module needs example_inputs (a tensor or a tuple of tensors) to export")
            from edgeq.api.export import export_module

            name = type(model).__name__
            label = f"torch module {name}"
            path = Path(tmp) / f"{name}.onnx"
            inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            export_module(model, inputs, path)
        else:
            raise ModelError(
                f"model must be an .onnx path, an onnx.ModelProto or a torch.nn.Module, not {type(model).__name__}"
            )
        replaced = [] if replace_nonfinite else None
        loaded = load_model(path, replaced=replaced)
        if replaced:
            path = save_model(loaded, Path(tmp) / f"{name}.nonfinite-replaced.onnx")
        yield FloatModel(loaded, path, name, label, replaced or [])


def _is_torch_module(value) -> bool:
    return any(cls.__module__.startswith("torch.nn") and cls.__name__ == "Module" for cls in type(value).__mro__)


def image_spec_of(value: str | ImageSpec | None) -> ImageSpec | None:
    return parse_image_spec(value) if isinstance(value, str) else value


def calibration_data(
    source: FloatModel, calib, recipe: Recipe, *, image_spec=None, progress: bool = False
) -> CalibrationData:
    """CALIB as checked calibration data for SOURCE, after the refusals that do not depend on it (an already
    quantized model, compute inside control flow): the data's shapes would not be the first complaint."""
    refuse_quantized(source.model.graph, source.label)
    refuse_control_flow(source.model.graph, source.label)
    return data_of(
        calib, source.model, image_spec=image_spec, max_samples=recipe.max_calib_samples,
        what="calibration data", progress=progress,
    )  # fmt: skip


def refuse_unused_image_spec(image_spec, *sources) -> None:
    """An image spec with no image folder among SOURCES would be ignored: a mistake, refused naming the data. A
    path that does not exist passes here (its own error comes first), as does anything that is not a path."""
    given = [source for source in sources if source is not None]
    if image_spec is None or not given:
        return
    if any(not isinstance(s, str | os.PathLike) or Path(s).is_dir() or not Path(s).exists() for s in given):
        return
    raise DataError(
        f"--image-spec applies to image folders, and {' and '.join(map(str, given))} is not one (it would be ignored)"
    )


def data_of(
    source,
    model: ir.Model,
    *,
    image_spec: str | ImageSpec | None = None,
    max_samples: int | None = None,
    what: str = "the data",
    progress: bool = False,
) -> CalibrationData:
    """SOURCE (see the module docstring) as checked data for MODEL's inputs."""
    if isinstance(source, str) and source == SYNTHETIC:
        preprocessed = clone_model(model)
        preprocess(preprocessed)
        return distill(preprocessed, progress=progress)
    return data_for(source, input_specs(model), image_spec=image_spec, max_samples=max_samples, what=what)


def data_for(
    source,
    specs: list[InputSpec],
    *,
    image_spec: str | ImageSpec | None = None,
    max_samples: int | None = None,
    what: str = "the data",
) -> CalibrationData:
    """SOURCE (anything but "synthetic") as checked data for inputs SPECS."""
    if isinstance(source, CalibrationData):
        return source
    if isinstance(source, str | os.PathLike):
        return open_data(source, specs, image_spec=image_spec_of(image_spec), max_samples=max_samples)
    if isinstance(source, np.ndarray):
        return ArrayData(_single_input(specs, source, what), specs, what, max_samples)
    if isinstance(source, Mapping):
        return ArrayData(dict(source), specs, what, max_samples)
    if callable(source):
        return CallableData(source, specs, max_samples, what=what)
    if isinstance(source, Iterable):
        items = source if not isinstance(source, Iterator) else list(source)
        return CallableData(lambda: items, specs, max_samples, what=what)
    raise DataError(f"{what}: {type(source).__name__} is not data edgeq can read (see edgeq.api.inputs)")


def _single_input(specs: list[InputSpec], array: np.ndarray, what: str) -> dict[str, np.ndarray]:
    if len(specs) != 1:
        raise DataError(
            f"{what}: a bare array feeds a single-input model; this one has inputs {', '.join(s.name for s in specs)}"
            " (give a dict of input name -> array)"
        )
    return {specs[0].name: array}


def labels_of(source) -> np.ndarray | None:
    """The "label" array of an .npz evaluation source, if it has one."""
    if isinstance(source, str | os.PathLike) and str(source).endswith(".npz"):
        from edgeq.data import load_arrays

        return load_arrays(source).get("label")
    return None


def recipe_of(recipe: Recipe | str | os.PathLike | Mapping | None, *, synthetic: bool = False, **options) -> Recipe:
    """RECIPE with OPTIONS (recipe field names; None means not given) applied on top. ``passes`` replaces the
    recipe's list; a ``bias_correction`` mode adds the bias-correction pass.

    Data-free calibration adds equalization and analytic bias correction, and equalizes by weight ranges
    unless the recipe says otherwise: 8 distilled inputs are too few to scale by activation ranges (MobileNetV2:
    0.688 agreement that way, 0.809 by weights, on views the benchmark does not use)."""
    if isinstance(recipe, Recipe):
        base = recipe.validate()
    elif isinstance(recipe, Mapping):
        try:
            base = Recipe(**{key.replace("-", "_"): value for key, value in recipe.items()}).validate()
        except TypeError as exc:
            raise RecipeError(f"recipe: {exc}") from None
    else:
        base = load_recipe(recipe)
    if synthetic:
        base = base.updated(
            passes=sorted({*base.passes, "equalize", "bias-correction"}),
            bias_correction="analytic" if options.get("bias_correction") is None else None,
            equalize_scaling="weights" if base.equalize_scaling == "auto" else None,
        )
    unknown = set(options) - set(Recipe.__dataclass_fields__)
    if unknown:
        raise RecipeError(f"unknown option(s) {', '.join(sorted(unknown))}")
    if options.get("bias_correction") is not None:
        passes = options.get("passes")
        passes = list(passes if passes is not None else base.passes)
        options["passes"] = passes if "bias-correction" in passes else [*passes, "bias-correction"]
    return base.updated(**options)
