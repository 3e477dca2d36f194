"""Elementwise math on one int8 input; the output has the input's shape and layout and the encoding of its Q:

    Exp       -> EXP       a 256-entry float table (edgeq/reference/exp_log.py)        LiteRT only (*)
    Log       -> LOG       the same, log(v <= 0) = the output grid's lowest value        LiteRT only (*)
    Sqrt      -> SQRT      sqrtf of the dequantized value, truncated (reference/sqrt.py)  LiteRT only (*)
    Abs       -> ABS       |x - zp_in|, requantized (edgeq/reference/abs.py)
    Neg       -> MUL by the constant -1 (encoding (1, 0)): one requantization, in both runtimes (TFLite's NEG
                 negates stored values and has no int8 kernel in TFLite Micro)
    Pow(x, 2) -> MUL(x, x) (TFLite's SQUARE and POW have no int8 kernels); Pow(x, 0.5) -> SQRT; other exponents
                 are refused

(*) TFLite Micro runs EXP, LOG and SQRT in float32 only: an int8 .tflite with them loads in LiteRT, not in TFLite
Micro (tflite-micro 0.dev20261023: "input->type != kTfLiteFloat32"). SQRT fails LiteRT's invocation on a negative
input, so it is emitted only where the input's encoding has none (zp_in = -128). At float precision each is the
float32 builtin (MUL for Neg and Pow). int16 (16x8): EXP and LOG are emitted as int16 (513-entry tables, LiteRT
only); an int16 encoding is symmetric (it always has negative values), so Sqrt becomes a float island.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import Builtin, by_input_type, input_shape, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.elementwise import MUL
from edgeq.targets.tflite.lower.registry import lowers

_ELEMENTWISE = dict(kind="elementwise", version=by_input_type(int8=2, int16=2), output_shape=input_shape)
_BOTH_FLOAT = "LiteRT and TFLite Micro (float .tflite)"


def _litert_table(opcode: str, options: str | None, kernel: str, int16_note: str = "") -> Builtin:
    """An int8 and int16 kernel LiteRT has and TFLite Micro does not (it runs the op in float32 only)."""
    verified = (
        f"bit-exact with LiteRT BUILTIN_REF and default kernels (reference kernel edgeq/reference/{kernel}); "
        "TFLite Micro has a float32 kernel only; ONNX Runtime QDQ within 1 LSB"
    )
    int16 = f"bit-exact with LiteRT BUILTIN_REF only (reference kernel edgeq/reference/{kernel}){int16_note}"
    micro_resolver = "Add" + opcode.title()
    return register(
        Builtin(
            opcode,
            options,
            micro_resolver,
            verified={"int8": verified, "int16": int16, "float32": _BOTH_FLOAT},
            micro_types=("float32",),
            **_ELEMENTWISE,
        )
    )


EXP = _litert_table("EXP", "ExpOptions", "exp_log.py")
LOG = _litert_table("LOG", None, "exp_log.py")
SQRT = _litert_table("SQRT", None, "sqrt.py", "; the lowering runs an int16 Sqrt as a float island")
ABS = register(
    Builtin(
        "ABS",
        options="AbsOptions",
        micro_resolver="AddAbs",
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=input_shape,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/abs.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (the multiplier divided in float32); ONNX Runtime "
            "QDQ within 1 LSB",
            "int16": "bit-exact with TFLite Micro (reference kernel edgeq/reference/abs.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (the multiplier divided in float32)",
            "float32": _BOTH_FLOAT,
        },
        micro_types=("int8", "int16", "float32"),
    )
)
UNARY = {"Exp": EXP, "Log": LOG, "Sqrt": SQRT, "Abs": ABS}


def _emit(ctx: LoweringContext, node: ir.Node, builtin: Builtin, extra=lambda act: []) -> None:
    act = ctx.activation(node.inputs[0], node)
    out, activation = ctx.output(node, static_shape(node.inputs[0].shape), act.perm)
    if activation != "NONE":
        raise unsupported(
            node, f"{builtin.opcode} has no fused activation for the Relu/Clip after it", "attribute"
        )
    if builtin is SQRT and not ctx.float and ctx.encoding_of(act.index)[1] != -128:
        code = "no-int8-kernel" if ctx.integer == np.int16 else "attribute"  # int16: symmetric, a float island
        raise unsupported(node, "its input's encoding has negative values, on which LiteRT's SQRT fails", code)
    options = {"FusedActivationFunction": "NONE"} if builtin is MUL else None
    ctx.add_op(builtin, [act.index, *extra(act)], [out], options)


@lowers("Exp", "Log", "Sqrt", "Abs")
def unary(ctx: LoweringContext, node: ir.Node) -> None:
    _emit(ctx, node, UNARY[node.op_type])


def _scalar(ctx: LoweringContext, name: str, real: float, rank: int) -> int:
    """A (1,) * RANK constant holding REAL exactly: float32, or an integer 1 or -1 with scale |REAL|."""
    shape = (1,) * rank
    if ctx.float:
        return ctx.tensor(name, shape, np.float32, data=np.full(shape, real, np.float32))
    return ctx.tensor(
        name, shape, ctx.integer, (np.float32(abs(real)), 0), np.full(shape, np.sign(real), ctx.integer)
    )


@lowers("Neg")
def neg(ctx: LoweringContext, node: ir.Node) -> None:
    rank = len(node.inputs[0].shape)
    _emit(ctx, node, MUL, lambda act: [_scalar(ctx, f"{node.name}_minus_one", -1.0, rank)])


@lowers("Pow")
def power(ctx: LoweringContext, node: ir.Node) -> None:
    exponent = node.inputs[1].const_value if len(node.inputs) > 1 and node.inputs[1] is not None else None
    values = None if exponent is None else np.unique(exponent.numpy())
    if values is None or values.size != 1:
        raise unsupported(node, "an exponent that is not one constant", "dynamic")
    if values[0] == 2:
        _emit(ctx, node, MUL, lambda act: [act.index])
    elif values[0] == 0.5:
        _emit(ctx, node, SQRT)
    else:
        raise unsupported(node, f"exponent {values[0]}; TFLite lowers 2 (MUL) and 0.5 (SQRT)", "attribute")
