"""Raise a model's default-domain opset with onnx's version converter, when a later step needs a newer opset.

Three steps need one: ONNX ``Gelu`` exists from opset 20 (passes.fuse_gelu), QuantizeLinear/DequantizeLinear take
int16 from opset 21 (int16 activations, A16W8), and INT4 tensors (and Cast to and from them) exist from opset 21
(4-bit weights packed, passes.pack_int4). Each converter adapter rewrites one op into its new form (e.g.
ReduceMean's axes attribute into an input), so the converted graph computes the same. The adapters write new
operands as Constant nodes; they are lifted to initializers, as preprocessing has them.
"""

from __future__ import annotations

import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.errors import UnsupportedError

INT16_QDQ_OPSET = 21  # QuantizeLinear/DequantizeLinear with int16 integers
INT4_OPSET = 21  # INT4 initializers and Cast from INT4


def default_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def convert_up(model: ir.Model, opset: int) -> str | None:
    """MODEL converted in place to OPSET (its graph replaced); None, or why onnx's converter cannot."""
    try:
        proto = onnx.version_converter.convert_version(ir.serde.serialize_model(model), opset)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types for adapters it lacks
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    converted = ir.serde.deserialize_model(proto)
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(converted)
    model.graph = converted.graph
    model.opset_imports.pop("ai.onnx", None)
    model.opset_imports[""] = opset
    return None


class RaiseOpsetPass(ir.passes.InPlacePass):
    """The model at opset OPSET or above; UnsupportedError naming WHY when onnx cannot convert it."""

    def __init__(self, opset: int, why: str):
        super().__init__()
        self.opset, self.why = opset, why

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if default_opset(model) >= self.opset:
            return ir.passes.PassResult(model, modified=False)
        failure = convert_up(model, self.opset)
        if failure is not None:
            raise UnsupportedError(
                f"{self.why} need opset {self.opset}, and onnx cannot convert this opset-{default_opset(model)} "
                f"model: {failure}"
            )
        return ir.passes.PassResult(model, modified=True)
