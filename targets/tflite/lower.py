"""Lower edgeq's QDQ ONNX model to a TFLite graph: ``DQ -> op -> Q`` units become int8 TFLite builtins.

Every activation between a QuantizeLinear and its DequantizeLinear becomes one int8 TFLite tensor with that
encoding; the compute node between them becomes one operator whose output tensor carries the encoding of the Q
that follows it (through a fused Relu/Clip, which becomes the operator's fused activation). Constant weights
behind a DequantizeLinear are stored with their integers and scales unchanged, so the .tflite computes with exactly
the numbers of the QDQ model.

Layout. TFLite convolutions and pools are NHWC. Every rank-4 activation is NHWC in the TFLite graph and every
other tensor keeps the ONNX order, so the whole graph is converted once, with no transpose pairs around each op:
weights OIHW -> OHWI (depthwise [C*M, 1, KH, KW] -> [1, KH, KW, C*M]), axes and pads are permuted, broadcast
constants are laid out NHWC. Where a reshape crosses layouts, the transpose it needs is emitted only when it moves
data (a [N, 1, 1, C] tensor flattens the same in both orders), and a Flatten that feeds only fully-connected
layers is absorbed by permuting the weight columns (ONNX flattens C,H,W, TFLite H,W,C).

Padding. ONNX pads become TFLite SAME only when they equal SAME's pads for that input size (TFLite puts the odd
pixel at the end, so symmetric pads with stride 2 are not SAME), VALID when zero, and otherwise an explicit PAD
(which pads int8 with the zero point, i.e. real 0) before a VALID op; before a MAX_POOL it is a PADV2 with the
lowest integer (ONNX pads max pooling with -inf).

Min and Max become MINIMUM and MAXIMUM, which compare the stored integers: a constant operand (equalization's
per-channel bound) is laid out NHWC like ADD's, and both operands must carry the output's encoding.

``precision="float"`` lowers the same graph with float32 tensors and the dequantized weights, for speed
comparisons; ``io`` chooses the model's input/output type: int8 (what MCUs want), uint8 (QUANTIZE requantizes
at the edges) or float (QUANTIZE/DEQUANTIZE at the edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgeq.errors import EdgeqError
from edgeq.quantization.plan import activation_bounds
from edgeq.targets.tflite.versions import op_version
from edgeq.tflite_format.flatbuffer import Graph, Operator, Quantization, Tensor

IO_TYPES = ("int8", "uint8", "float")
TO_NHWC = (0, 2, 3, 1)
_ELEMENTWISE = {"Add": "ADD", "Mul": "MUL"}
_SELECTIONS = {"Min": "MINIMUM", "Max": "MAXIMUM"}
_DATA_MOVEMENT = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


@dataclass
class Lowered:
    graph: Graph
    input_layouts: list[str]
    output_layouts: list[str]
    ops: dict[str, int] = field(default_factory=dict)


@dataclass
class _Activation:
    """A TFLite tensor holding an ONNX activation; ``perm`` maps ONNX axes to the TFLite layout."""

    index: int
    perm: tuple[int, ...]
    column_order: np.ndarray | None = None  # set when a Flatten was absorbed into the next FC's weights


def _static(shape) -> list[int]:
    """ONNX shape with symbolic dimensions (the batch) set to 1: TFLite graphs are built for one sample."""
    return [d if isinstance(d, int) else 1 for d in shape]


def _layout_perm(rank: int) -> tuple[int, ...]:
    return TO_NHWC if rank == 4 else tuple(range(rank))


def _is_identity(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _moves_data(shape: tuple[int, ...], perm) -> bool:
    """A transpose moves data unless the axes longer than 1 keep their order."""
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept != sorted(kept)


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Lowering:
    def __init__(self, model: ir.Model, io: str, precision: str):
        if io not in IO_TYPES:
            raise EdgeqError(f"--io must be one of {', '.join(IO_TYPES)}, not {io!r}")
        self.model = model
        self.onnx = model.graph
        self.float = precision == "float"
        self.io = "float" if self.float else io
        self.graph = Graph(description=f"edgeq {'float' if self.float else 'int8'} (NHWC)")
        self.values: dict[int, _Activation] = {}  # id(ir.Value) -> activation
        self.ops: dict[str, int] = {}
        self.fused: set[int] = set()  # ids of Relu/Clip nodes folded into the op before them

    # ------------------------------------------------------------------------------------------- helpers

    def _tensor(self, name, shape, dtype, encoding=None, data=None) -> int:
        quantization = None
        if encoding is not None and not self.float:
            quantization = Quantization(*encoding)
        if self.float and dtype in (np.int8, np.uint8):
            dtype = np.float32
        return self.graph.add_tensor(Tensor(name, shape, dtype, quantization, data))

    def _op(self, opcode, inputs, outputs, options=None) -> None:
        op = Operator(opcode, list(inputs), list(outputs), dict(options or {}))
        op.version = op_version(self.graph, op)
        self.graph.add_operator(op)
        self.ops[opcode] = self.ops.get(opcode, 0) + 1

    @staticmethod
    def _producer(value: ir.Value | None) -> ir.Node | None:
        return None if value is None else value.producer()

    def _encoding(self, q_node: ir.Node) -> tuple[float, int]:
        scale = float(q_node.inputs[1].const_value.numpy())
        zero = q_node.inputs[2]
        return scale, int(zero.const_value.numpy()) if zero is not None else 0

    def _int8_encoding(self, q_node: ir.Node) -> tuple[np.float32, int]:
        scale, zero_point = self._encoding(q_node)
        dtype = q_node.outputs[0].dtype
        if dtype == ir.DataType.UINT8:
            zero_point -= 128  # the same grid shifted: TFLite int8 kernels
        elif dtype != ir.DataType.INT8:
            raise EdgeqError(f"{q_node.name}: the TFLite target needs 8-bit activations, got {dtype}")
        return np.float32(scale), zero_point

    def activation(self, value: ir.Value, node: ir.Node) -> _Activation:
        """The TFLite tensor of an activation input: the output of an activation Q/DQ pair."""
        dq = self._producer(value)
        if dq is None or dq.op_type != "DequantizeLinear" or id(dq.inputs[0]) not in self.values:
            raise EdgeqError(
                f"node {node.name} ({node.op_type}) reads {value.name}, which is not quantized; "
                "the TFLite target needs every op between the input and output quantized"
            )
        return self.values[id(dq.inputs[0])]

    def constant(self, value: ir.Value, node: ir.Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(integers, scales, zero points) of a constant behind a DequantizeLinear."""
        dq = self._producer(value)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0].const_value is None:
            raise EdgeqError(f"node {node.name} ({node.op_type}): input {value.name} is not a quantized constant")
        q = dq.inputs[0].const_value.numpy()
        scale = dq.inputs[1].const_value.numpy().astype(np.float32)
        zero = dq.inputs[2].const_value.numpy() if len(dq.inputs) > 2 and dq.inputs[2] is not None else 0
        return q, np.atleast_1d(scale), np.atleast_1d(np.asarray(zero, np.int64))

    def is_quantized_constant(self, value: ir.Value) -> bool:
        dq = self._producer(value)
        return dq is not None and dq.op_type == "DequantizeLinear" and dq.inputs[0].const_value is not None

    def output(self, node: ir.Node, shape_onnx, perm) -> tuple[int, str]:
        """The TFLite output tensor of NODE (through a fused Relu/Clip) and the fused activation's name."""
        value = node.outputs[0]
        fused = None
        consumers = [user for user, _ in value.uses()]
        if len(consumers) == 1 and consumers[0].op_type in ("Relu", "Clip"):
            fused = consumers[0]
            self.fused.add(id(fused))
            value = fused.outputs[0]
            consumers = [user for user, _ in value.uses()]
        if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
            raise EdgeqError(
                f"node {node.name} ({node.op_type}): its output is not quantized by a single QuantizeLinear; "
                "the TFLite target needs every op quantized (check --exclude)"
            )
        q_node = consumers[0]
        encoding = self._int8_encoding(q_node)
        activation = "NONE" if fused is None else self._fused_activation(node, fused, encoding)
        shape = tuple(int(shape_onnx[p]) for p in perm)
        index = self._tensor(self._name(q_node), shape, np.int8, encoding)
        self.values[id(q_node.outputs[0])] = _Activation(index, tuple(perm))
        return index, activation

    @staticmethod
    def _name(q_node: ir.Node) -> str:
        return q_node.inputs[0].name.removesuffix("_float")

    @staticmethod
    def _fused_activation(node: ir.Node, act: ir.Node, encoding) -> str:
        """TFLite's fused activation for the Relu/Clip ACT after NODE. A Clip with other bounds is still exact when
        the output's integer grid saturates inside them (then the clamp is the int8 range itself)."""
        bounds = activation_bounds(act)
        if bounds is None:
            raise EdgeqError(f"node {node.name}: {act.op_type} {act.name} has bounds that are not constant")
        named = {(0.0, 6.0): "RELU6", (0.0, math.inf): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}
        if bounds in named:
            return named[bounds]
        lo, hi = bounds
        scale, zero_point = float(encoding[0]), encoding[1]
        grid_lo, grid_hi = scale * (-128 - zero_point), scale * (127 - zero_point)
        if grid_lo >= lo - 1e-6 and grid_hi <= hi + 1e-6:
            return "NONE"
        raise EdgeqError(f"node {node.name}: Clip({lo}, {hi}) after {node.op_type} has no TFLite fused activation")

    def transpose(self, act: _Activation, shape_onnx, to_perm, name) -> _Activation:
        """ACT re-laid out as TO_PERM (a TRANSPOSE only when it moves data, else a RESHAPE)."""
        src_shape = [int(shape_onnx[p]) for p in act.perm]
        inverse = np.argsort(act.perm)
        tfl_perm = tuple(int(inverse[p]) for p in to_perm)
        if tuple(act.perm) == tuple(to_perm):
            return act
        out_shape = tuple(int(shape_onnx[p]) for p in to_perm)
        src = self.graph.tensors[act.index]
        out = self._tensor(name, out_shape, src.dtype, self._encoding_of(act.index))
        if _moves_data(tuple(src_shape), tfl_perm):
            perm_const = self._tensor(f"{name}_perm", (len(tfl_perm),), np.int32, data=np.array(tfl_perm, np.int32))
            self._op("TRANSPOSE", [act.index, perm_const], [out])
        else:
            self._reshape(act.index, out, out_shape, name)
        return _Activation(out, tuple(to_perm))

    def _encoding_of(self, index: int):
        q = self.graph.tensors[index].quantization
        return None if q is None else (q.scale[0], int(q.zero_point[0]))

    def _reshape(self, src: int, out: int, shape, name) -> None:
        shape_const = self._tensor(f"{name}_shape", (len(shape),), np.int32, data=np.array(shape, np.int32))
        self._op("RESHAPE", [src, shape_const], [out])

    # ------------------------------------------------------------------------------------------- lowering

    def run(self) -> Lowered:
        input_layouts = [self._graph_input(v) for v in self.onnx.inputs]
        for node in self.onnx:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") or id(node) in self.fused:
                self._check_qdq(node)
                continue
            lower = getattr(self, f"_lower_{node.op_type}", None)
            if lower is None:
                raise EdgeqError(f"node {node.name}: op {node.op_type} is not supported by the TFLite target")
            lower(node)
        output_layouts = [self._graph_output(v) for v in self.onnx.outputs]
        return Lowered(self.graph, input_layouts, output_layouts, dict(sorted(self.ops.items())))

    def _check_qdq(self, node: ir.Node) -> None:
        if node.op_type == "QuantizeLinear":
            source = self._producer(node.inputs[0])
            if source is not None and source.op_type == "DequantizeLinear":
                raise EdgeqError(f"node {node.name}: requantization between Q/DQ pairs is not supported")

    def _graph_input(self, value: ir.Value) -> str:
        consumers = [user for user, _ in value.uses()]
        if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
            raise EdgeqError(f"graph input {value.name} is not quantized: the TFLite target needs quantized inputs")
        q_node = consumers[0]
        shape = _static(value.shape)
        perm = _layout_perm(len(shape))
        tfl_shape = tuple(shape[p] for p in perm)
        signature = tuple(
            -1 if not isinstance(value.shape[p], int) else shape[p] for p in perm
        )
        encoding = self._int8_encoding(q_node)
        if self.io == "int8":
            index = self._tensor(value.name, tfl_shape, np.int8, encoding)
            internal = index
        else:
            dtype = np.float32 if self.io == "float" else np.uint8
            io_encoding = None if self.io == "float" else (encoding[0], encoding[1] + 128)
            index = self._tensor(value.name, tfl_shape, dtype, io_encoding)
            internal = index if self.float else self._tensor(f"{value.name}_int8", tfl_shape, np.int8, encoding)
            if not self.float:
                self._op("QUANTIZE", [index], [internal])
        if any(s < 0 for s in signature):
            self.graph.tensors[index].shape_signature = signature
        self.graph.inputs.append(index)
        self.values[id(q_node.outputs[0])] = _Activation(internal, perm)
        return "NHWC" if len(shape) == 4 else "as ONNX"

    def _graph_output(self, value: ir.Value) -> str:
        dq = self._producer(value)
        if dq is None or dq.op_type != "DequantizeLinear" or id(dq.inputs[0]) not in self.values:
            raise EdgeqError(f"graph output {value.name} is not quantized: the TFLite target needs quantized outputs")
        act = self.values[id(dq.inputs[0])]
        if act.column_order is not None:
            raise EdgeqError(f"graph output {value.name} is a flattened feature map; end the model with a layer")
        internal = self.graph.tensors[act.index]
        if self.io == "int8" or self.float:
            index = act.index
            internal.name = value.name
        else:
            dtype = np.float32 if self.io == "float" else np.uint8
            scale, zero = self._encoding_of(act.index)
            encoding = None if self.io == "float" else (scale, zero + 128)
            index = self._tensor(value.name, internal.shape, dtype, encoding)
            self._op("DEQUANTIZE" if self.io == "float" else "QUANTIZE", [act.index], [index])
        self.graph.outputs.append(index)
        return "NHWC" if len(internal.shape) == 4 else "as ONNX"

    # Conv, depthwise conv ------------------------------------------------------------------------------

    def _spatial_padding(self, node, in_shape, kernel, strides, dilations) -> tuple[str, list[tuple[int, int]]]:
        """'SAME'/'VALID' and the explicit pads ([(top, bottom), (left, right)]) a PAD must add first."""
        auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
        if auto_pad == "VALID":
            return "VALID", [(0, 0), (0, 0)]
        same = [_same_pads(in_shape[2 + i], kernel[i], strides[i], dilations[i]) for i in range(2)]
        if auto_pad == "SAME_UPPER":
            return "SAME", [(0, 0), (0, 0)]
        if auto_pad == "SAME_LOWER":
            pads = [(after, before) for before, after in same]
        else:
            raw = list(node.attributes.get_ints("pads", [0, 0, 0, 0]))
            pads = [(raw[0], raw[2]), (raw[1], raw[3])]
        if all(p == (0, 0) for p in pads):
            return "VALID", pads
        if pads == same:
            return "SAME", [(0, 0), (0, 0)]
        return "VALID", pads

    def _pad(self, act: _Activation, pads, in_shape_onnx, name, fill: float | None = None):
        """An explicit PAD (fill = real 0) or PADV2 (fill = an integer) on the spatial axes of an NHWC input."""
        shape = [int(in_shape_onnx[p]) for p in act.perm]
        paddings = np.array([[0, 0], list(pads[0]), list(pads[1]), [0, 0]], np.int32)
        out_shape = tuple(s + int(p.sum()) for s, p in zip(shape, paddings, strict=True))
        encoding = self._encoding_of(act.index)
        out = self._tensor(f"{name}_padded", out_shape, np.int8, encoding)
        padding_const = self._tensor(f"{name}_paddings", (4, 2), np.int32, data=paddings)
        if fill is None:
            self._op("PAD", [act.index, padding_const], [out])
        else:
            dtype = np.float32 if self.float else np.int8
            value = self._tensor(f"{name}_pad_value", (), dtype, encoding, data=np.array(fill, dtype))
            self._op("PADV2", [act.index, padding_const, value], [out])
        onnx_shape = list(in_shape_onnx)
        onnx_shape[2] += sum(pads[0])
        onnx_shape[3] += sum(pads[1])
        return _Activation(out, act.perm), onnx_shape

    def _lower_Conv(self, node: ir.Node) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        in_shape = _static(x_value.shape)
        if len(in_shape) != 4:
            raise EdgeqError(f"node {node.name}: only 2-D convolutions are supported by the TFLite target")
        w, w_scale, w_zero = self.constant(node.inputs[1], node)
        group = node.attributes.get_int("group", 1)
        kernel = list(w.shape[2:])
        strides = list(node.attributes.get_ints("strides", [1, 1]))
        dilations = list(node.attributes.get_ints("dilations", [1, 1]))
        padding, pads = self._spatial_padding(node, in_shape, kernel, strides, dilations)
        if padding == "VALID" and any(p != (0, 0) for p in pads):
            act, in_shape = self._pad(act, pads, in_shape, node.name)
        c_in, c_out = in_shape[1], w.shape[0]
        depthwise = group != 1 and group == c_in and w.shape[1] == 1
        if group != 1 and not depthwise:
            raise EdgeqError(f"node {node.name}: grouped convolution (group={group}) is not supported by TFLite")
        if depthwise:
            weights = w.transpose(1, 2, 3, 0)  # [C*M, 1, KH, KW] -> [1, KH, KW, C*M]
            axis = 3
        else:
            weights = w.transpose(0, 2, 3, 1)  # OIHW -> OHWI
            axis = 0
        bias_q = self._bias(node, 2, act, w_scale, c_out)
        w_index = self._weights(f"{node.name}.weight", weights, w_scale, w_zero, axis)
        out_shape = [in_shape[0], *_static(node.outputs[0].shape)[1:]]
        out, activation = self.output(node, out_shape, TO_NHWC)
        options = {
            "Padding": padding,
            "StrideW": strides[1],
            "StrideH": strides[0],
            "DilationWFactor": dilations[1],
            "DilationHFactor": dilations[0],
            "FusedActivationFunction": activation,
        }
        if depthwise:
            options["DepthMultiplier"] = c_out // c_in
        self._op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [act.index, w_index, bias_q], [out], options)

    def _weights(self, name, weights, scale, zero, axis) -> int:
        if self.float:
            shape = [1] * weights.ndim
            shape[axis] = -1
            real = (weights.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
            return self._tensor(name, weights.shape, np.float32, data=real.astype(np.float32))
        q = Quantization(scale, zero, axis if scale.size > 1 else 0)
        return self.graph.add_tensor(Tensor(name, weights.shape, np.int8, q, np.ascontiguousarray(weights)))

    def _bias(self, node, bias_input: int, act: _Activation, w_scale, channels: int) -> int:
        """The int32 bias (zeros when the ONNX node has none: int8 TFLite convolutions require one)."""
        in_scale = self._encoding_of(act.index)[0] if not self.float else 1.0
        expected = (np.float32(in_scale) * np.broadcast_to(w_scale, (channels,))).astype(np.float32)
        value = node.inputs[bias_input] if len(node.inputs) > bias_input else None
        if value is None:
            values, scale = np.zeros(channels, np.int32), expected
        else:
            values, scale, _ = self.constant(value, node)
            values = np.broadcast_to(values.astype(np.int32).reshape(-1), (channels,))
            scale = np.broadcast_to(scale, (channels,)).astype(np.float32)
        if self.float:
            return self._tensor(f"{node.name}.bias", (channels,), np.float32, data=(values * scale).astype(np.float32))
        q = Quantization(scale if w_scale.size > 1 else scale[:1], 0)
        return self.graph.add_tensor(Tensor(f"{node.name}.bias", (channels,), np.int32, q, np.array(values)))

    # Fully connected -----------------------------------------------------------------------------------

    def _lower_Gemm(self, node: ir.Node) -> None:
        if node.attributes.get_int("transA", 0):
            raise EdgeqError(f"node {node.name}: Gemm with transA is not supported by the TFLite target")
        w, scale, zero = self.constant(node.inputs[1], node)
        weights = w if node.attributes.get_int("transB", 0) else w.T  # -> [out, in]
        self._fully_connected(node, weights, scale, zero, bias_input=2)

    def _lower_MatMul(self, node: ir.Node) -> None:
        if not self.is_quantized_constant(node.inputs[1]):
            raise EdgeqError(f"node {node.name}: MatMul of two activations is not supported by the TFLite target")
        w, scale, zero = self.constant(node.inputs[1], node)
        if w.ndim != 2:
            raise EdgeqError(f"node {node.name}: MatMul weights must be 2-D for the TFLite target")
        self._fully_connected(node, w.T, scale, zero, bias_input=None)

    def _fully_connected(self, node, weights, scale, zero, bias_input) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        rank = len(x_value.shape)
        if not _is_identity(act.perm):
            raise EdgeqError(f"node {node.name}: a fully-connected layer on a 4-D feature map is not supported")
        if act.column_order is not None:
            weights = weights[:, act.column_order]
        weights = np.ascontiguousarray(weights)
        out_features = weights.shape[0]
        bias = (
            self._bias(node, bias_input, act, scale, out_features)
            if bias_input is not None and len(node.inputs) > bias_input and node.inputs[bias_input] is not None
            else -1
        )
        w_index = self._weights(f"{node.name}.weight", weights, scale, zero, 0)
        out_shape = _static(node.outputs[0].shape)
        out, activation = self.output(node, out_shape, tuple(range(rank)))
        options = {"FusedActivationFunction": activation, "KeepNumDims": rank > 2}
        self._op("FULLY_CONNECTED", [act.index, w_index, bias], [out], options)

    # Elementwise ---------------------------------------------------------------------------------------

    def _operand(self, value: ir.Value, node: ir.Node, out_rank: int, perm) -> int:
        if not self.is_quantized_constant(value):
            act = self.activation(value, node)
            if len(value.shape) != out_rank or tuple(act.perm) != tuple(perm):
                raise EdgeqError(f"node {node.name}: broadcasting between feature maps of different rank")
            return act.index
        q, scale, zero = self.constant(value, node)
        if scale.size != 1:
            raise EdgeqError(f"node {node.name}: a per-channel quantized constant operand is not supported")
        q = q.reshape((1,) * (out_rank - q.ndim) + q.shape).transpose(perm)
        encoding = (scale[0], int(zero[0]))
        if self.float:
            q = (q.astype(np.float32) - encoding[1]) * encoding[0]
        return self._tensor(f"{value.name}_const", q.shape, q.dtype, encoding, np.ascontiguousarray(q))

    def _elementwise(self, node: ir.Node) -> None:
        out_value = node.outputs[0]
        rank = len(out_value.shape)
        perm = _layout_perm(rank)
        inputs = [self._operand(v, node, rank, perm) for v in node.inputs]
        shape = _static(out_value.shape)
        out, activation = self.output(node, shape, perm)
        self._op(_ELEMENTWISE[node.op_type], inputs, [out], {"FusedActivationFunction": activation})

    _lower_Add = _elementwise
    _lower_Mul = _elementwise

    def _selection(self, node: ir.Node) -> None:
        """Min/Max of two operands (e.g. Min(x, B), B a per-channel bound from equalization): TFLite compares the
        stored integers, exact when both operands and the output share one encoding."""
        if len(node.inputs) != 2:
            raise EdgeqError(f"node {node.name}: {node.op_type} of {len(node.inputs)} inputs; TFLite has two")
        out_value = node.outputs[0]
        rank = len(out_value.shape)
        perm = _layout_perm(rank)
        inputs = [self._operand(v, node, rank, perm) for v in node.inputs]
        out, activation = self.output(node, _static(out_value.shape), perm)
        if activation != "NONE":
            raise EdgeqError(f"node {node.name}: {_SELECTIONS[node.op_type]} has no fused activation in TFLite")
        for index in inputs:
            self._check_shared(node, index, out)
        self._op(_SELECTIONS[node.op_type], inputs, [out])

    _lower_Min = _selection
    _lower_Max = _selection

    def _lower_Concat(self, node: ir.Node) -> None:
        out_value = node.outputs[0]
        rank = len(out_value.shape)
        perm = _layout_perm(rank)
        inputs = [self._operand(v, node, rank, perm) for v in node.inputs]
        axis = node.attributes.get_int("axis") % rank
        shape = _static(out_value.shape)
        out, activation = self.output(node, shape, perm)
        options = {"Axis": list(perm).index(axis), "FusedActivationFunction": activation}
        self._op("CONCATENATION", inputs, [out], options)

    # Pooling -------------------------------------------------------------------------------------------

    def _pool(self, node: ir.Node, opcode: str) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        in_shape = _static(x_value.shape)
        kernel = list(node.attributes.get_ints("kernel_shape"))
        strides = list(node.attributes.get_ints("strides", [1, 1]))
        if node.attributes.get_int("ceil_mode", 0):
            raise EdgeqError(f"node {node.name}: ceil_mode pooling is not supported by the TFLite target")
        if list(node.attributes.get_ints("dilations", [1, 1])) != [1, 1]:
            raise EdgeqError(f"node {node.name}: dilated pooling is not supported by the TFLite target")
        padding, pads = self._spatial_padding(node, in_shape, kernel, strides, [1, 1])
        explicit = padding == "VALID" and any(p != (0, 0) for p in pads)
        if explicit and opcode == "MAX_POOL_2D":  # ONNX pads max pooling with -inf
            lowest = float(np.finfo(np.float32).min) if self.float else -128
            act, in_shape = self._pad(act, pads, in_shape, node.name, fill=lowest)
        elif explicit:
            if not node.attributes.get_int("count_include_pad", 0):
                raise EdgeqError(
                    f"node {node.name}: AveragePool pads {pads} are not TFLite SAME padding and exclude the pad "
                    "from the count; TFLite cannot express that"
                )
            act, in_shape = self._pad(act, pads, in_shape, node.name)
        elif padding == "SAME" and opcode == "AVERAGE_POOL_2D" and node.attributes.get_int("count_include_pad", 0):
            raise EdgeqError(f"node {node.name}: count_include_pad=1 with SAME pads is not supported by TFLite")
        out_shape = [in_shape[0], *_static(node.outputs[0].shape)[1:]]
        out, activation = self.output(node, out_shape, TO_NHWC)
        self._check_shared(node, act.index, out)
        options = {
            "Padding": padding,
            "StrideW": strides[1],
            "StrideH": strides[0],
            "FilterWidth": kernel[1],
            "FilterHeight": kernel[0],
            "FusedActivationFunction": activation,
        }
        self._op(opcode, [act.index], [out], options)

    def _check_shared(self, node, src: int, out: int) -> None:
        if not self.float and self._encoding_of(src) != self._encoding_of(out):
            raise EdgeqError(
                f"node {node.name} ({node.op_type}): input and output encodings differ; TFLite requires them equal"
            )

    def _lower_MaxPool(self, node: ir.Node) -> None:
        self._pool(node, "MAX_POOL_2D")

    def _lower_AveragePool(self, node: ir.Node) -> None:
        self._pool(node, "AVERAGE_POOL_2D")

    def _lower_GlobalAveragePool(self, node: ir.Node) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        if len(x_value.shape) != 4:
            raise EdgeqError(f"node {node.name}: only 2-D global pooling is supported by the TFLite target")
        in_shape = _static(x_value.shape)
        out, _ = self.output(node, [in_shape[0], in_shape[1], 1, 1], TO_NHWC)
        axes = self._tensor(f"{node.name}_axes", (2,), np.int32, data=np.array([1, 2], np.int32))
        self._op("MEAN", [act.index, axes], [out], {"KeepDims": True})

    # Data movement -------------------------------------------------------------------------------------

    def _lower_reshape(self, node: ir.Node) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        in_shape = _static(x_value.shape)
        out_value = node.outputs[0]
        out_shape = _static(out_value.shape)
        out_perm = _layout_perm(len(out_shape))
        absorb = (
            not _is_identity(act.perm)
            and len(out_shape) == 2
            and _moves_data(tuple(in_shape[p] for p in act.perm), np.argsort(act.perm))
            and all(self._is_fc_with_weights(user) for user in self._consumers_after_qdq(node))
        )
        if not absorb and _moves_data(tuple(in_shape[p] for p in act.perm), np.argsort(act.perm)):
            act = self.transpose(act, in_shape, tuple(range(len(in_shape))), f"{node.name}_to_onnx_order")
        # otherwise the elements are already in ONNX order (e.g. [N, 1, 1, C]): RESHAPE reads them directly
        if _is_identity(out_perm):
            out, _ = self.output(node, out_shape, out_perm)
            self._check_shared(node, act.index, out)
            self._reshape(act.index, out, tuple(out_shape), node.name)
            if absorb:  # TFLite flattens H,W,C: the FC reads ONNX column column_order[j] at position j
                self.values[id(self._q_after(node).outputs[0])].column_order = (
                    np.arange(int(np.prod(in_shape))).reshape(in_shape).transpose(act.perm).reshape(-1)
                )
            return
        # reshape to an ONNX-order 4-D tensor, then lay it out NHWC
        q_node = self._q_after(node)
        encoding = self._int8_encoding(q_node)
        plain = self._tensor(f"{node.name}_onnx_order", tuple(out_shape), np.int8, encoding)
        self._reshape(act.index, plain, tuple(out_shape), node.name)
        moved = self.transpose(_Activation(plain, tuple(range(4))), out_shape, out_perm, self._name(q_node))
        self.values[id(q_node.outputs[0])] = moved

    _lower_Reshape = _lower_reshape
    _lower_Flatten = _lower_reshape
    _lower_Squeeze = _lower_reshape
    _lower_Unsqueeze = _lower_reshape

    def _q_after(self, node: ir.Node) -> ir.Node:
        users = [user for user, _ in node.outputs[0].uses()]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            raise EdgeqError(f"node {node.name} ({node.op_type}): its output is not quantized")
        return users[0]

    def _consumers_after_qdq(self, node: ir.Node) -> list[ir.Node]:
        q_node = self._q_after(node)
        users = []
        for dq, _ in q_node.outputs[0].uses():
            users.extend(user for user, _ in dq.outputs[0].uses())
        return users

    def _is_fc_with_weights(self, node: ir.Node) -> bool:
        return (
            node.op_type == "Gemm" and not node.attributes.get_int("transA", 0)
        ) or (node.op_type == "MatMul" and self.is_quantized_constant(node.inputs[1]))

    def _lower_Transpose(self, node: ir.Node) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        rank = len(x_value.shape)
        perm = list(node.attributes.get_ints("perm", list(reversed(range(rank)))))
        out_perm = _layout_perm(rank)
        in_shape = _static(x_value.shape)
        out_shape = [in_shape[p] for p in perm]
        # tflite_in = onnx_in.transpose(act.perm); tflite_out = onnx_in.transpose(perm).transpose(out_perm)
        inverse = np.argsort(act.perm)
        tfl_perm = np.array([inverse[perm[b]] for b in out_perm], np.int32)
        out, _ = self.output(node, out_shape, out_perm)
        self._check_shared(node, act.index, out)
        perm_const = self._tensor(f"{node.name}_perm", (rank,), np.int32, data=tfl_perm)
        self._op("TRANSPOSE", [act.index, perm_const], [out])

    def _lower_Pad(self, node: ir.Node) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        mode = node.attributes.get_string("mode", "constant")
        if mode != "constant":
            raise EdgeqError(f"node {node.name}: Pad mode {mode!r} is not supported by the TFLite target")
        rank = len(x_value.shape)
        raw = node.inputs[1].const_value.numpy().astype(np.int64)
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            raise EdgeqError(f"node {node.name}: Pad with axes is not supported by the TFLite target")
        if (raw < 0).any():
            raise EdgeqError(f"node {node.name}: negative pads (cropping) are not supported by the TFLite target")
        pairs = np.stack([raw[:rank], raw[rank:]], axis=1)[list(act.perm)].astype(np.int32)
        in_shape = _static(x_value.shape)
        out_shape = [s + int(raw[i] + raw[rank + i]) for i, s in enumerate(in_shape)]
        out, _ = self.output(node, out_shape, act.perm)
        self._check_shared(node, act.index, out)
        paddings = self._tensor(f"{node.name}_paddings", (rank, 2), np.int32, data=pairs)
        fill = node.inputs[2] if len(node.inputs) > 2 else None
        if fill is None or float(self._real_constant(fill, node)) == 0.0:
            self._op("PAD", [act.index, paddings], [out])
            return
        scale, zero = self._encoding_of(out) if not self.float else (1.0, 0)
        real = float(self._real_constant(fill, node))
        q = np.clip(np.round(real / scale) + zero, -128, 127)
        dtype = np.float32 if self.float else np.int8
        value = self._tensor(
            f"{node.name}_pad_value", (), dtype, (scale, zero), np.array(real if self.float else q, dtype)
        )
        self._op("PADV2", [act.index, paddings, value], [out])

    def _real_constant(self, value: ir.Value, node: ir.Node) -> float:
        if value.const_value is not None:
            return float(value.const_value.numpy())
        q, scale, zero = self.constant(value, node)
        return float((q.astype(np.float64) - zero[0]) * scale[0])

    def _lower_Resize(self, node: ir.Node) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        if len(x_value.shape) != 4:
            raise EdgeqError(f"node {node.name}: only 2-D (NCHW) Resize is supported by the TFLite target")
        mode = node.attributes.get_string("mode", "nearest")
        transform = node.attributes.get_string("coordinate_transformation_mode", "half_pixel")
        nearest_mode = node.attributes.get_string("nearest_mode", "round_prefer_floor")
        in_shape = _static(x_value.shape)
        out_shape = [in_shape[0], *_static(node.outputs[0].shape)[1:]]
        if out_shape[:2] != in_shape[:2]:
            raise EdgeqError(f"node {node.name}: Resize may only change the spatial axes for the TFLite target")
        # (AlignCorners, HalfPixelCenters). TFLite's nearest neighbour takes floor(x * s) (asymmetric),
        # round_half_away(x * s) (align corners) or floor((x + 0.5) * s), which is ONNX's half_pixel rounded
        # half up, or tf_half_pixel_for_nn floored.
        if mode == "linear":
            flags = {
                "asymmetric": (False, False),
                "align_corners": (True, False),
                "half_pixel": (False, True),
                "pytorch_half_pixel": (False, True) if min(out_shape[2:]) > 1 else None,
            }.get(transform)
        elif mode == "nearest":
            flags = {
                ("asymmetric", "floor"): (False, False),
                ("align_corners", "round_prefer_ceil"): (True, False),
                ("half_pixel", "round_prefer_ceil"): (False, True),
                ("tf_half_pixel_for_nn", "floor"): (False, True),
            }.get((transform, nearest_mode))
        else:
            flags = None
        supported = flags is not None
        if not supported:
            raise EdgeqError(
                f"node {node.name}: Resize mode={mode} coordinate_transformation_mode={transform}"
                f" nearest_mode={nearest_mode} has no exact TFLite equivalent"
            )
        out, _ = self.output(node, out_shape, TO_NHWC)
        self._check_shared(node, act.index, out)
        size = self._tensor(f"{node.name}_size", (2,), np.int32, data=np.array(out_shape[2:], np.int32))
        opcode = "RESIZE_BILINEAR" if mode == "linear" else "RESIZE_NEAREST_NEIGHBOR"
        self._op(opcode, [act.index, size], [out], {"AlignCorners": flags[0], "HalfPixelCenters": flags[1]})

    # Nonlinear -----------------------------------------------------------------------------------------

    def _unary(self, node: ir.Node, opcode: str, options=None) -> None:
        x_value = node.inputs[0]
        act = self.activation(x_value, node)
        shape = _static(x_value.shape)
        out, _ = self.output(node, shape, act.perm)
        self._op(opcode, [act.index], [out], options)

    def _lower_Sigmoid(self, node: ir.Node) -> None:
        self._unary(node, "LOGISTIC")

    def _lower_HardSwish(self, node: ir.Node) -> None:
        self._unary(node, "HARD_SWISH")

    def _lower_Softmax(self, node: ir.Node) -> None:
        rank = len(node.inputs[0].shape)
        axis = node.attributes.get_int("axis", -1) % rank
        act = self.activation(node.inputs[0], node)
        if list(act.perm).index(axis) != rank - 1:
            raise EdgeqError(f"node {node.name}: Softmax must run over the channel/last axis for TFLite")
        self._unary(node, "SOFTMAX", {"Beta": 1.0})


def lower(model: ir.Model, *, io: str = "int8", precision: str = "int8") -> Lowered:
    """The TFLite graph of edgeq's QDQ MODEL (batch 1; see the module docstring)."""
    if precision not in ("int8", "float"):
        raise EdgeqError(f"precision must be int8 or float, not {precision!r}")
    return _Lowering(model, io, precision).run()

