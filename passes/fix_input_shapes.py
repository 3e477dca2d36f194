"""Fix the dynamic dimensions of the graph inputs, so that shape arithmetic folds and TFLite gets static shapes.

Third-party models declare dynamic dimensions: [N, 3, H, W] for a detector, [batch, sequence] for a text
encoder. A TFLite graph is built for one shape, and the shape arithmetic exporters write (Shape -> Gather ->
Concat -> Reshape, "same" padding computed at run time) folds to constants only once the shapes are known. Each
input's dimensions come from, in order:

* the recipe's ``input_shapes`` (``--input-shape NAME=1,3,320,320``): every axis, the first included;
* the calibration samples (``sample_shapes``, each sample's shape without the sample axis): every axis but the
  first, which the samples replace.

The first (batch) axis becomes 1 only when ``batch`` is asked for: preprocessing asks when the graph still reads
a shape after folding with it symbolic, so a model without shape arithmetic keeps its dynamic batch.

A given shape must name an input, have its rank and agree with its fixed dimensions (a RecipeError), and the
calibration samples must have it (a DataError). The result says what was fixed and from where.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from edgeq.errors import DataError, RecipeError
from edgeq.passes.stage import StageResult

GIVEN = "--input-shape"
FROM_DATA = "the calibration data"
BATCH = "batch 1 (the graph computes from the batch size)"


@dataclass
class FixInputShapesResult(StageResult):
    fixed: dict[str, dict] = field(default_factory=dict)  # input name -> {"shape": [...], "from": ...}

    def summary(self) -> dict:
        return {"fixed_input_shapes": self.fixed} if self.fixed else {}


def _text(dims) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"


class FixInputShapesPass(ir.passes.InPlacePass):
    def __init__(
        self,
        given: dict[str, list[int]] | None = None,
        sample_shapes: dict[str, tuple[int, ...]] | None = None,
        *,
        batch: bool = False,
    ):
        super().__init__()
        self.given, self.samples, self.batch = dict(given or {}), sample_shapes or {}, batch

    def _resolve_names(self, inputs: list[ir.Value]) -> dict[str, list[int]]:
        given = dict(self.given)
        if "" in given:
            if len(inputs) != 1:
                raise RecipeError(
                    f"{GIVEN}: the model has {len(inputs)} inputs; name one: "
                    f"{', '.join(v.name for v in inputs)}"
                )
            given[inputs[0].name] = given.pop("")
        unknown = sorted(set(given) - {v.name for v in inputs})
        if unknown:
            raise RecipeError(
                f"{GIVEN}: the model has no input {unknown[0]!r} (inputs: {', '.join(v.name for v in inputs)})"
            )
        return given

    def call(self, model: ir.Model) -> FixInputShapesResult:
        inputs = [v for v in model.graph.inputs if not v.is_initializer() and v.shape is not None]
        given = self._resolve_names(inputs)
        fixed = {}
        for value in inputs:
            dims = [d if isinstance(d, int) else None for d in value.shape]
            new, source = self._dims(value.name, dims, given)
            if new != dims:
                value.shape = ir.Shape(new)
                fixed[value.name] = {"shape": new, "from": source}
        return FixInputShapesResult(model, bool(fixed), fixed)

    def _dims(self, name: str, dims: list[int | None], given: dict[str, list[int]]):
        sample = self.samples.get(name)
        if name in given:
            shape = given[name]
            if len(shape) != len(dims) or any(
                d is not None and d != s for d, s in zip(dims, shape, strict=False)
            ):
                raise RecipeError(
                    f"{GIVEN} {name}={_text(shape)} does not fit the model's input {_text(dims)}"
                )
            if sample is not None and list(sample) != shape[1:]:
                raise DataError(
                    f"{FROM_DATA}: input {name!r} has samples of shape {_text(sample)}, "
                    f"{GIVEN} fixes {_text(shape[1:])}"
                )
            return list(shape), GIVEN
        new = list(dims)
        if sample is not None and len(sample) + 1 == len(dims):
            new[1:] = [d if d is not None else s for d, s in zip(dims[1:], sample, strict=True)]
        if self.batch and new and new[0] is None:
            new[0] = 1
        return new, FROM_DATA if new[1:] != dims[1:] else BATCH
