"""ONNX Pad (mode constant) -> PAD or PADV2, and the explicit padding before a convolution or pool.

    out[i + before] = in[i];   every other element = the pad value

PAD pads int8 with the output zero point, i.e. the real value 0; PADV2 pads with its scalar constant input, which
carries the output's encoding (a real fill value c becomes clamp(round(c / S) + zp), rounded half to even).
Both copy stored values: input, output and fill share one encoding. The paddings operand is an int32 [rank, 2] tensor of (before, after)
per TFLite axis (the ONNX pads permuted to NHWC). Before a MAX_POOL the fill is the lowest integer, since ONNX
pads max pooling with -inf.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, register
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator


def _version(graph: Graph, op: Operator) -> int:
    first = graph.tensors[op.inputs[0]]
    if len(first.shape) > 4:
        return 4
    return 3 if first.dtype == np.int16 else 2 if first.dtype == np.int8 else 1


def _padded_shape(graph: Graph, op: Operator):
    x = graph.tensors[op.inputs[0]]
    paddings = graph.tensors[op.inputs[1]].data if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if paddings is None or paddings.shape != (len(x.shape), 2):
        return None
    return tuple(int(d + before + after) for d, (before, after) in zip(x.shape, paddings, strict=True))


def _pad_builtin(opcode: str, options: str, resolver: str) -> Builtin:
    return register(
        Builtin(
            opcode,
            options=options,
            micro_resolver=resolver,
            kind="data_movement",
            version=_version,
            output_shape=_padded_shape,
            required_inputs=2,
            parameter_input=1,
            same_encoding=True,
            verified={"int8": BIT_EXACT.format("pad.py"), "int16": BIT_EXACT.format("pad.py")},
            micro_types=("int8", "int16", "float32"),
        )
    )


PAD = _pad_builtin("PAD", "PadOptions", "AddPad")
PADV2 = _pad_builtin("PADV2", "PadV2Options", "AddPadV2")


def pad_spatial(ctx: LoweringContext, act: Activation, pads, in_shape_onnx, name, fill: float | None = None):
    """An explicit PAD (fill = real 0) or PADV2 (fill = an integer) on the spatial axes of an NHWC input; returns
    the padded activation and its ONNX shape."""
    shape = [int(in_shape_onnx[p]) for p in act.perm]
    paddings = np.array([[0, 0], list(pads[0]), list(pads[1]), [0, 0]], np.int32)
    out_shape = tuple(s + int(p.sum()) for s, p in zip(shape, paddings, strict=True))
    encoding = ctx.encoding_of(act.index)
    out = ctx.tensor(f"{name}_padded", out_shape, ctx.integer, encoding)
    padding_const = ctx.tensor(f"{name}_paddings", (4, 2), np.int32, data=paddings)
    if fill is None:
        ctx.add_op(PAD, [act.index, padding_const], [out])
    else:
        dtype = np.float32 if ctx.float else ctx.integer
        value = ctx.tensor(f"{name}_pad_value", (), dtype, encoding, data=np.array(fill, dtype))
        ctx.add_op(PADV2, [act.index, padding_const, value], [out])
    onnx_shape = list(in_shape_onnx)
    onnx_shape[2] += sum(pads[0])
    onnx_shape[3] += sum(pads[1])
    return Activation(out, act.perm), onnx_shape


def _real_constant(ctx: LoweringContext, value: ir.Value, node: ir.Node) -> float:
    if value.const_value is not None:
        return float(value.const_value.numpy())
    q, scale, zero = ctx.constant(value, node)
    return float((q.astype(np.float64) - zero[0]) * scale[0])


@lowers("Pad")
def pad(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    mode = node.attributes.get_string("mode", "constant")
    if mode != "constant":
        raise unsupported(node, f"Pad mode {mode!r}", "attribute")
    rank = len(x_value.shape)
    raw = node.inputs[1].const_value.numpy().astype(np.int64)
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        raise unsupported(node, "Pad with axes", "attribute")
    if (raw < 0).any():
        raise unsupported(node, "negative pads (cropping)", "attribute")
    pairs = np.stack([raw[:rank], raw[rank:]], axis=1)[list(act.perm)].astype(np.int32)
    in_shape = static_shape(x_value.shape)
    out_shape = [s + int(raw[i] + raw[rank + i]) for i, s in enumerate(in_shape)]
    out, _ = ctx.output(node, out_shape, act.perm)
    ctx.check_shared(node, act.index, out)
    paddings = ctx.tensor(f"{node.name}_paddings", (rank, 2), np.int32, data=pairs)
    fill = node.inputs[2] if len(node.inputs) > 2 else None
    if fill is None or _real_constant(ctx, fill, node) == 0.0:
        ctx.add_op(PAD, [act.index, paddings], [out])
        return
    scale, zero = ctx.encoding_of(out) if not ctx.float else (1.0, 0)
    real = _real_constant(ctx, fill, node)
    q = np.clip(np.round(real / scale) + zero, ctx.qtype.qmin, ctx.qtype.qmax)
    dtype = np.float32 if ctx.float else ctx.integer
    value = ctx.tensor(
        f"{node.name}_pad_value", (), dtype, (scale, zero), np.array(real if ctx.float else q, dtype)
    )
    ctx.add_op(PADV2, [act.index, paddings, value], [out])
