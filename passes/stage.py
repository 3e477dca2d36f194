"""How the pipeline (edgeq.pipeline) builds the optional passes, and what every stage reports back.

An optional pass is one module ``edgeq.passes.<name>``, named as the recipe names it (dashes become
underscores: "range-search" is passes/range_search.py), that defines

    PHASE = "float"        # runs on the float model, before calibration
          | "quantized"    # runs on the QDQ model, after calibration and QDQ insertion
    def stage(context: StageContext) -> ir.passes.PassBase | None    # None: the recipe does not ask for it

and whose pass returns a ``StageResult``: the model, whether it changed, and ``summary()``, the JSON-able record
the quantize report keeps under the stage's name. The pipeline runs the passes in the order of
``edgeq.quantization.recipe.PASS_ORDER``, which is ``KNOWN_PASSES`` (the names a recipe may list) and then
dyadic; adding a pass is its module plus its name in ``KNOWN_PASSES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from edgeq.data import CalibrationData
from edgeq.quantization.plan import QuantPlan
from edgeq.quantization.recipe import Recipe


def failing_cause(error: ir.passes.PassError) -> BaseException:
    """The exception the failing pass raised, which onnx_ir's PassManager wraps (once per nesting level) in
    PassError: what to re-raise, so that an EdgeqError reaches the user as the one line it is."""
    cause: BaseException = error
    while isinstance(cause, ir.passes.PassError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return cause


@dataclass
class StageResult(ir.passes.PassResult):
    """A stage's model and what it did; ``summary()`` is what the report records."""

    def summary(self) -> dict:
        return {}


@dataclass
class StageContext:
    """What a stage may use besides the model it rewrites.

    ``float_model``, ``plan`` and ``rebuild`` are set for the quantized phase: the calibrated float model (the
    reference that data-driven passes measure against), its quantization plan, and a function that builds the
    QDQ model afresh from the calibration with each encoding group's range scaled by a factor (group root
    tensor -> factor), as range search needs.
    """

    recipe: Recipe
    data: CalibrationData
    progress: bool = True
    float_model: ir.Model | None = None
    plan: QuantPlan | None = None
    rebuild: Callable[[dict[str, float]], ir.Model] | None = None
