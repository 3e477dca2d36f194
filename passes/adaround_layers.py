"""A quantized layer as AdaRound (passes.adaround) sees it: G independent matrix products over its input rows.

A Conv with G groups computes, at each output position, rows [G, R, K] @ weights [G, K, N]: the rows are the
input patches under the kernel (im2col, ``Patches``), K = C_in / G * prod(kernel), N = C_out / G. A Gemm or 2-D
MatMul is one product (G = 1) with one row per position of the input's leading axes. ``Layer`` holds the float
weights in that form, the weight scale, the float bias and the bounds its output is compared within: the fused
activation's (Relu/Clip, and equalization's per-channel bound Min(Relu(z), h / s_i)) and the output encoding's
representable range, since an error where the next layers saturate reaches nothing downstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgeq.quantization.plan import BIAS_INPUT, activation_bounds, is_constant


@dataclass
class Patches:
    """im2col of a Conv: the input patch under the kernel at chosen output positions."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends, as ONNX stores them
    auto_pad: str
    groups: int

    @classmethod
    def of(cls, node: ir.Node, kernel: tuple[int, ...]) -> Patches:
        rank = len(kernel)
        attr = node.attributes
        return cls(
            kernel,
            tuple(attr.get_ints("strides", [1] * rank)),
            tuple(attr.get_ints("dilations", [1] * rank)),
            tuple(attr.get_ints("pads", [0] * 2 * rank)),
            attr.get_string("auto_pad", "NOTSET"),
            attr.get_int("group", 1),
        )

    def _padding(self, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
        if self.auto_pad in ("NOTSET", "VALID"):
            rank = len(spatial)
            return [
                (self.pads[d], self.pads[rank + d]) if self.auto_pad == "NOTSET" else (0, 0)
                for d in range(rank)
            ]
        padding = []
        for size, k, s, d in zip(spatial, self.kernel, self.strides, self.dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            padding.append((large, small) if self.auto_pad == "SAME_LOWER" else (small, large))
        return padding

    def _output_shape(self, spatial, padding) -> tuple[int, ...]:
        return tuple(
            (size + lo + hi - (k - 1) * d - 1) // s + 1
            for size, (lo, hi), k, s, d in zip(
                spatial, padding, self.kernel, self.strides, self.dilations, strict=True
            )
        )

    def positions(self, x: np.ndarray) -> int:
        return math.prod(self._output_shape(x.shape[2:], self._padding(x.shape[2:])))

    def rows(self, x: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """Patches of X [B, C, *spatial] at flat output positions CHOSEN [B, P]: [G, B * P, C / G * prod(kernel)]."""
        padding = self._padding(x.shape[2:])
        out_shape = self._output_shape(x.shape[2:], padding)
        padded = np.pad(x, [(0, 0), (0, 0), *padding])
        rank = len(self.kernel)
        out_coords = np.unravel_index(chosen, out_shape)  # each [B, P]
        index = [np.arange(x.shape[0]).reshape(-1, 1, *[1] * rank)]
        for d in range(rank):
            offsets = np.arange(self.kernel[d]) * self.dilations[d]
            offsets = offsets.reshape([1, 1] + [-1 if e == d else 1 for e in range(rank)])
            index.append(out_coords[d][(...,) + (None,) * rank] * self.strides[d] + offsets)
        # advanced indices on the batch and spatial axes around the channel slice: [B, P, *kernel, C]
        patches = padded[index[0], :, *index[1:]]
        patches = np.moveaxis(patches, -1, 2).reshape(chosen.size, self.groups, -1)
        return np.ascontiguousarray(patches.transpose(1, 0, 2))


def _to_groups(w: np.ndarray, layout: str, groups: int) -> np.ndarray:
    """Weights in their ONNX layout -> [G, K, N] (rows [G, R, K] @ weights = outputs [G, R, N])."""
    if layout == "conv":  # [Cout, Cin / G, *kernel]
        return w.reshape(groups, w.shape[0] // groups, -1).transpose(0, 2, 1)
    return (w.T if layout == "transposed" else w)[None]


def _from_groups(w: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    if layout == "conv":
        return w.transpose(0, 2, 1).reshape(shape)
    return w[0].T if layout == "transposed" else w[0]


@dataclass
class Layer:
    """One layer as G independent matrix products: rows [G, R, K] @ weights [G, K, N]."""

    node: ir.Node
    quantized: ir.Value  # the "<node>.weight_quantized" initializer
    layout: str  # "conv", "transposed" (Gemm with transB: [N, K]) or "plain" ([K, N])
    qdq_input: str  # the layer's input, named alike in the QDQ model and its clipped reference
    weight: np.ndarray  # float weights [G, K, N]
    scale: np.ndarray  # [G, 1, N] or [1, 1, 1]
    bias: np.ndarray  # [G, 1, N]
    bounds: tuple[np.ndarray, np.ndarray]  # [G, 1, N]: the fused activation's and the output encoding's
    patches: Patches | None  # None: a Gemm/MatMul, one row per position of the leading axes

    def positions(self, x: np.ndarray) -> int:
        return self.patches.positions(x) if self.patches is not None else math.prod(x.shape[1:-1])

    def rows(self, x: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        if self.patches is not None:
            return self.patches.rows(x, chosen)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        return flat[np.arange(x.shape[0])[:, None], chosen].reshape(1, chosen.size, -1)

    def output(self, rows: np.ndarray, weight: np.ndarray) -> np.ndarray:
        y = np.matmul(rows, weight) + self.bias
        return np.clip(y, *self.bounds)

    def integers(self) -> np.ndarray:
        q = self.quantized.const_value.numpy()
        return _to_groups(q, self.layout, self.weight.shape[0]).astype(np.float32)

    def set_integers(self, q: np.ndarray) -> None:
        array = _from_groups(q, self.layout, self.quantized.shape).astype(np.int8)
        self.quantized.const_value = ir.tensor(array, name=self.quantized.name)

    @property
    def row_bytes(self) -> int:
        groups, k, n = self.weight.shape
        return 4 * groups * (k + n)


def _constant(value: ir.Value | None) -> np.ndarray | None:
    return value.const_value.numpy() if is_constant(value) else None


def _activation_bounds(float_node: ir.Node, channels: int, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (low, high), one per output channel, of the activation that is FLOAT_NODE's only consumer: a
    Relu/Clip, then a Min with a constant if that is the activation's only consumer (equalization's per-channel
    Relu6 bound, Min(Relu(z), h / s_i)); -inf, inf without one. CHANNEL_AXIS counts from the output's last axis."""
    consumers = list(float_node.outputs[0].consumers())
    activation = consumers[0] if len(consumers) == 1 else None
    bounds = activation_bounds(activation) if activation is not None else None
    if bounds is None:
        activation, bounds = None, (-math.inf, math.inf)
    low, high = np.full(channels, bounds[0], np.float32), np.full(channels, bounds[1], np.float32)
    ceiling = _channel_ceiling(activation, channels, channel_axis) if activation is not None else None
    return low, high if ceiling is None else np.minimum(high, ceiling)


def _output_range(node: ir.Node) -> tuple[float, float]:
    """The range of the QuantizeLinear that NODE's output (through its fused Relu/Clip) feeds in the QDQ model."""
    value = node.outputs[0]
    consumers = list(value.consumers())
    if len(consumers) == 1 and consumers[0].op_type in ("Relu", "Clip"):
        value = consumers[0].outputs[0]
        consumers = list(value.consumers())
    if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
        return -math.inf, math.inf
    scale, zero_point = (_constant(v) for v in consumers[0].inputs[1:3])
    if scale is None or zero_point is None or scale.size != 1:
        return -math.inf, math.inf
    limits = np.iinfo(zero_point.dtype)
    return float(scale) * (limits.min - int(zero_point)), float(scale) * (limits.max - int(zero_point))


def _channel_ceiling(activation: ir.Node, channels: int, channel_axis: int) -> np.ndarray | None:
    """h, one per channel, if ACTIVATION's only consumer is Min(activation, h) with a constant h holding one
    value, or one per channel on CHANNEL_AXIS (counted from the end: broadcasting aligns trailing axes)."""
    consumers = list(activation.outputs[0].consumers())
    if len(consumers) != 1 or consumers[0].op_type != "Min" or len(consumers[0].inputs) != 2:
        return None
    others = [v for v in consumers[0].inputs if v is not activation.outputs[0]]
    if len(others) != 1 or not is_constant(others[0]):
        return None
    h = others[0].const_value.numpy().astype(np.float32)
    if h.size == 1:
        return np.full(channels, h.item(), np.float32)
    if h.size == channels and h.ndim >= channel_axis and h.shape[h.ndim - channel_axis] == channels:
        return h.reshape(-1)
    return None


def unsupported(node: ir.Node, float_node: ir.Node | None) -> str | None:
    if float_node is None or float_node.op_type != node.op_type or not is_constant(float_node.inputs[1]):
        return "no float node with constant weights of the same name"
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return "Gemm with transA"
    if node.op_type == "MatMul" and float_node.inputs[1].const_value.numpy().ndim != 2:
        return "MatMul with batched weights"
    bias_index = BIAS_INPUT.get(node.op_type)
    bias = float_node.inputs[bias_index] if bias_index and len(float_node.inputs) > bias_index else None
    if bias is not None and not is_constant(bias):
        return "computed bias"
    if node.op_type == "Gemm" and bias is not None:
        w = float_node.inputs[1].const_value.numpy()
        n_out = w.shape[0 if node.attributes.get_int("transB", 0) else 1]
        if bias.const_value.numpy().size not in (1, n_out):
            return "Gemm with a full [M, N] bias"
    return None

def layer_of(node: ir.Node, float_node: ir.Node, quantized: ir.Value, dequantize: ir.Node) -> Layer:
    w = float_node.inputs[1].const_value.numpy().astype(np.float32)
    bias_index = BIAS_INPUT.get(node.op_type)
    b = (
        _constant(float_node.inputs[bias_index])
        if bias_index and len(float_node.inputs) > bias_index
        else None
    )
    b = np.zeros(1, np.float32) if b is None else b.astype(np.float32).reshape(-1)
    if node.op_type == "Gemm":  # the QDQ Gemm has alpha and beta folded into its weights and bias
        w = w * float_node.attributes.get_float("alpha", 1.0)
        b = b * float_node.attributes.get_float("beta", 1.0)
    if node.op_type == "Conv":
        layout, groups = "conv", node.attributes.get_int("group", 1)
    else:
        layout, groups = ("transposed" if node.attributes.get_int("transB", 0) else "plain"), 1
    weight = _to_groups(w, layout, groups)
    n_out = weight.shape[2]
    scale = dequantize.inputs[1].const_value.numpy().astype(np.float32)
    # The loss compares outputs as the next layers see them: activated (an error where the activation
    # saturates in both models reaches nothing downstream) and clipped to the output's encoding.
    # Conv outputs have their channels on axis 1 of w.ndim axes; Gemm and MatMul on the last axis.
    low, high = _activation_bounds(float_node, groups * n_out, w.ndim - 1 if layout == "conv" else 1)
    range_low, range_high = _output_range(node)
    bounds = (np.maximum(low, range_low), np.minimum(high, range_high))
    return Layer(
        node=node,
        quantized=quantized,
        layout=layout,
        qdq_input=node.inputs[0].name,
        weight=np.ascontiguousarray(weight),
        scale=scale.reshape(1, 1, 1) if scale.size == 1 else scale.reshape(groups, 1, n_out),
        bias=np.broadcast_to(b, (groups * n_out,)).reshape(groups, 1, n_out).copy(),
        bounds=tuple(bound.reshape(groups, 1, n_out) for bound in bounds),
        patches=Patches.of(node, w.shape[2:]) if layout == "conv" else None,
    )
