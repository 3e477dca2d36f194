"""ONNX Add, Sub, Mul, Div -> ADD, SUB, MUL, DIV; ONNX Min, Max of two operands -> MINIMUM, MAXIMUM.

ADD, SUB, MUL and DIV rescale (edgeq/reference/add.py, sub.py, mul.py, div.py): each operand and the output has
its own encoding, e.g.

    ADD: out = clamp(MBQM(MBQM((x1 - zp1) * 2^20, M1) + MBQM((x2 - zp2) * 2^20, M2), M_out) + zp_out, act)
    SUB: the same with the second term subtracted
    MUL: out = clamp(MBQM((x1 - zp1) * (x2 - zp2), M0, shift) + zp_out, act)          M0 ~ S1 * S2 / S_out
    DIV: out = clamp(MBQM((x1 - zp1) * 2^k / (x2 - zp2), ...) + zp_out, act)           M ~ S1 / (S2 * S_out)

and a following Relu/Clip is fused. MINIMUM and MAXIMUM compare the stored integers without reading any encoding,
which is min/max of the real values only when both operands and the output share one encoding (the quantization
plan gives Min/Max groups one); they have no fused activation. Operands broadcast like numpy.

Layout: the output takes the layout of the first activation operand with the output's rank (ctx.follow_perm:
elementwise ops do not care about layout, so a tensor stays in the layout it has); another activation operand is re-laid out to it
(a lower-rank one is first brought to the output's rank with leading 1s, as numpy broadcasting reads it), and a
constant operand (e.g. equalization's per-channel bound) is laid out like the output and keeps its per-tensor
encoding. (Division by a constant never gets here: preprocessing turns it into a Mul.)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.reference.div import div_multiplier
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, broadcast_shape, by_input_type, register
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.layout import relayout, reshape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator

ONNX_RUNTIME_1_LSB = "; ONNX Runtime QDQ within 1 LSB"


def _mul_version(graph: Graph, op: Operator) -> int:
    first, second, out = (graph.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    if first.dtype == np.int16:
        return 4
    if first.dtype == np.int8:
        multiplier = first.quantization.scale[0] * second.quantization.scale[0] / out.quantization.scale[0]
        return 3 if multiplier >= 1 else 2  # kernels before v3 assume a multiplier below one
    return 1


def _broadcasts_beyond_4d(graph: Graph, op: Operator) -> bool:
    first, second = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    return first.shape != second.shape and max(len(first.shape), len(second.shape)) > 4


def _selection_version(graph: Graph, op: Operator) -> int:
    if graph.tensors[op.inputs[0]].dtype == np.int16:
        return 4
    if _broadcasts_beyond_4d(graph, op):
        return 3  # 5-D broadcasting
    return 2 if graph.tensors[op.inputs[0]].dtype == np.int8 else 1


def _sub_version(graph: Graph, op: Operator) -> int:
    wide = _broadcasts_beyond_4d(graph, op)  # int16 with pot_scale_int16 false is 5 at any rank
    return by_input_type(int8=3 if wide else 2, int16=5, other=3 if wide else 1)(graph, op)


def _div_version(graph: Graph, op: Operator) -> int:
    return 2 if _broadcasts_beyond_4d(graph, op) else 1


_ARITHMETIC = dict(kind="elementwise", output_shape=broadcast_shape, required_inputs=2)
_16X8 = ("int8", "int16", "float32")  # micro_types: TFLite Micro has the int16 kernel
_ADD_SUB_INT16 = BIT_EXACT.format("add.py") + ", pot_scale_int16 false"
_EXACT_MUL = BIT_EXACT.format("mul.py")
ADD = register(
    Builtin(
        "ADD",
        options="AddOptions",
        micro_resolver="AddAdd",
        version=by_input_type(int8=2, int16=3),
        verified={"int8": BIT_EXACT.format("add.py") + ONNX_RUNTIME_1_LSB, "int16": _ADD_SUB_INT16},
        micro_types=_16X8,
        **_ARITHMETIC,
    )
)
SUB = register(
    Builtin(
        "SUB",
        options="SubOptions",
        micro_resolver="AddSub",
        version=_sub_version,
        verified={"int8": BIT_EXACT.format("add.py") + ONNX_RUNTIME_1_LSB, "int16": _ADD_SUB_INT16},
        micro_types=_16X8,
        **_ARITHMETIC,
    )
)
MUL = register(
    Builtin(
        "MUL",
        options="MulOptions",
        micro_resolver="AddMul",
        version=_mul_version,
        verified={"int8": _EXACT_MUL + ONNX_RUNTIME_1_LSB, "int16": _EXACT_MUL},
        micro_types=_16X8,
        **_ARITHMETIC,
    )
)
DIV = register(
    Builtin(
        "DIV",
        options="DivOptions",
        micro_resolver="AddDiv",
        version=_div_version,
        verified={
            "int8": BIT_EXACT.format("div.py") + " for nonzero divisors" + ONNX_RUNTIME_1_LSB,
            "float32": "LiteRT and TFLite Micro (float .tflite)",
        },
        **_ARITHMETIC,
    )
)
_SELECTION = dict(
    options="MaximumMinimumOptions",
    kind="elementwise",
    version=_selection_version,
    output_shape=broadcast_shape,
    required_inputs=2,
    same_encoding=True,
    micro_types=_16X8,
)
_EXACT_SELECTION = BIT_EXACT.format("maximum_minimum.py") + "; ONNX Runtime QDQ exactly"
_VERIFIED_SELECTION = {"int8": _EXACT_SELECTION, "int16": BIT_EXACT.format("maximum_minimum.py")}
MINIMUM = register(
    Builtin(
        "MINIMUM",
        micro_resolver="AddMinimum",
        verified={**_VERIFIED_SELECTION, "float32": "LiteRT (float .tflite): exactly min(x, bound)"},
        **_SELECTION,
    )
)
MAXIMUM = register(
    Builtin("MAXIMUM", micro_resolver="AddMaximum", verified=_VERIFIED_SELECTION, **_SELECTION)
)
BINARY = {"Add": ADD, "Sub": SUB, "Mul": MUL, "Div": DIV, "Min": MINIMUM, "Max": MAXIMUM}


def _broadcast_to_rank(
    ctx: LoweringContext, node: ir.Node, act: Activation, value: ir.Value, rank: int
) -> Activation:
    """ACT (of lower rank than RANK) with leading 1s, in ONNX order: how numpy broadcasting reads it."""
    shape = static_shape(value.shape)
    ordered = relayout(ctx, act, shape, tuple(range(len(shape))), f"{value.name}_onnx_order_for_{node.name}")
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    src = ctx.graph.tensors[ordered.index]
    name = f"{value.name}_rank{rank}_for_{node.name}"
    out = ctx.tensor(name, padded, src.dtype, ctx.encoding_of(ordered.index))
    reshape(ctx, ordered.index, out, padded, name)
    return Activation(out, tuple(range(rank)))


def operands(ctx: LoweringContext, node: ir.Node) -> tuple[list[int], tuple[int, ...]]:
    """NODE's operand tensors in one layout, and that layout (the output's): see the module docstring."""
    out_shape = static_shape(node.outputs[0].shape)
    rank = len(out_shape)
    activations = {
        i: ctx.activation(v, node) for i, v in enumerate(node.inputs) if not ctx.is_quantized_constant(v)
    }
    perm = ctx.follow_perm(node, rank)
    indices = []
    for i, value in enumerate(node.inputs):
        if i not in activations:
            indices.append(ctx.operand(value, node, rank, perm))
            continue
        act = activations[i]
        if len(value.shape) != rank:
            act = _broadcast_to_rank(ctx, node, act, value, rank)
        shape = [1] * (rank - len(value.shape)) + static_shape(value.shape)
        indices.append(relayout(ctx, act, shape, perm, f"{value.name}_for_{node.name}").index)
    return indices, tuple(perm)


@lowers("Add", "Sub", "Mul", "Div")
def arithmetic(ctx: LoweringContext, node: ir.Node) -> None:
    inputs, perm = operands(ctx, node)
    out, activation = ctx.output(node, static_shape(node.outputs[0].shape), perm)
    if node.op_type == "Div" and not ctx.float:
        inputs[1] = _nonzero_divisor(ctx, node, inputs[0], inputs[1], out)
    options = {"FusedActivationFunction": activation}
    if node.op_type in ("Add", "Sub") and ctx.graph.tensors[inputs[0]].dtype == np.int16:
        options["PotScaleInt16"] = False  # LiteRT's general-scale int16 kernel (edgeq/reference/add.py)
    ctx.add_op(BINARY[node.op_type], inputs, [out], options)


def _nonzero_divisor(ctx: LoweringContext, node: ir.Node, numerator: int, divisor: int, out: int) -> int:
    """DIVISOR, clamped away from its stored zero, or a refusal where int8 DIV cannot compute NODE.

    LiteRT fails the invocation when a divisor's stored value equals its zero point and TFLite Micro divides by 0
    (edgeq/reference/div.py). A divisor whose encoding is one-signed (zp -128: no negative values; zp 127: no
    positive ones) is clamped to its smallest nonzero magnitude, one step S_2, with MAXIMUM/MINIMUM (same
    encoding): x / 0 then saturates as ONNX Runtime's x / 0 = +-inf does. Both runtimes also mis-scale numerators
    0 and -1 (their 31 headroom bits ask RoundingDivideByPOT for a shift of 32 or more) unless
    S_1 / (S_2 * S_out) >= 2^(e - 1), e + 1 the bit length of the largest |x_2 - zp_2|.
    """
    tensor = ctx.graph.tensors[divisor]
    zp2 = ctx.encoding_of(divisor)[1]
    if tensor.is_constant:
        offsets = np.abs(tensor.data.astype(np.int64) - zp2)
        if np.any(offsets == 0):
            raise unsupported(node, "a constant divisor with zeros", "attribute")
        largest = int(offsets.max())
    elif zp2 in (-128, 127):
        bound_value = -127 if zp2 == -128 else 126
        bound = ctx.tensor(f"{node.name}_nonzero", (1,) * len(tensor.shape), np.int8, ctx.encoding_of(divisor),
                           np.full((1,) * len(tensor.shape), bound_value, np.int8))  # fmt: skip
        clamped = ctx.tensor(f"{node.name}_divisor", tensor.shape, np.int8, ctx.encoding_of(divisor))
        ctx.add_op(MAXIMUM if zp2 == -128 else MINIMUM, [divisor, bound], [clamped])
        divisor, largest = clamped, 255
    else:
        raise unsupported(
            node,
            "its divisor takes both signs, so it can be quantized to 0, where TFLite's int8 DIV fails (LiteRT) or "
            "returns garbage (TFLite Micro)",
            "no-int8-kernel",
        )
    scales = [ctx.encoding_of(i)[0] for i in (numerator, divisor, out)]
    shift = min(div_multiplier(*scales, arithmetic)[1] for arithmetic in ("double", "float32"))
    needed = largest.bit_length() - 1
    if not needed <= shift <= 23:
        raise unsupported(
            node,
            f"S1 / (S2 * S_out) = {scales[0] / (scales[1] * scales[2]):.3g} is outside [2^{needed - 1}, 2^23), "
            "where TFLite's int8 DIV mis-scales small numerators",
            "no-int8-kernel",
        )
    return divisor


@lowers("Min", "Max")
def selection(ctx: LoweringContext, node: ir.Node) -> None:
    """Min/Max of two operands (e.g. Min(x, B), B a per-channel bound from equalization)."""
    builtin = BINARY[node.op_type]
    if len(node.inputs) != 2:
        raise unsupported(node, f"{len(node.inputs)} inputs; TFLite has two", "attribute")
    inputs, perm = operands(ctx, node)
    out, activation = ctx.output(node, static_shape(node.outputs[0].shape), perm)
    if activation != "NONE":
        raise unsupported(node, f"{builtin.opcode} has no fused activation in TFLite", "attribute")
    for index in inputs:
        ctx.check_shared(node, index, out)
    ctx.add_op(builtin, inputs, [out])
