"""The state of one lowering: the TFLite graph being built and where each quantized ONNX value lives in it.

A QDQ model quantizes every activation as ``x_float -> QuantizeLinear -> x_q -> DequantizeLinear -> x``. The
lowering maps each such pair to one integer TFLite tensor with the Q's encoding (scale, zero point; a uint8 Q is
the same grid as int8 with the zero point shifted by -128), and each compute node between pairs to TFLite
operators. The integer type is the node's: int8 (int8 or uint8 Qs) or int16 (int16 Qs: TFLite's 16x8 kernels,
int16 activations with int8 weights; ``ctx.integer``, set by ``use_type_of`` before each node). A model may mix
them (the layers table's "int16": ``ctx.mixed``); every activation a node reads and writes then has its type, and
a requantized pair between the types becomes a QUANTIZE (edges.requantize).

* :meth:`LoweringContext.activation` is the tensor of a node's activation input (the output of a Q/DQ pair);
* :meth:`LoweringContext.constant` is (integers, scales, zero points) of a constant behind a DequantizeLinear;
* :meth:`LoweringContext.output` creates the node's output tensor with the encoding of the Q after it; a Relu or
  Clip between the node and that Q becomes the operator's fused activation (RELU, RELU6, RELU_N1_TO_1, or NONE
  where the output's integer grid already saturates inside the Clip's bounds);
* :meth:`LoweringContext.add_op` emits an operator of a registered Builtin (its options table and minimum version).

Layout: every rank-4 activation is NHWC in the TFLite graph (``perm`` TO_NHWC maps ONNX axes to TFLite axes), every
other tensor keeps the ONNX order. ``precision="float"`` builds the same graph with float32 tensors and the real
values of the constants (int8 requests become float32 tensors without quantization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgeq.errors import RecipeError, unsupported
from edgeq.quantization.plan import activation_bounds
from edgeq.quantization.qparams import ACTIVATION_TYPES
from edgeq.targets.tflite.builtins import Builtin
from edgeq.tflite_format.graph import Graph, Quantization, Tensor

IO_TYPES = ("int8", "uint8", "float")
# The kernels an int8 .tflite's operator choice is tuned for, where the best choice differs (prelu.py): "xnnpack",
# LiteRT's CPU delegate, or "micro", TFLite Micro (one operator, a smaller arena; also the integer-only ONNX
# model's form: PRELU is one table there).
KERNELS = ("xnnpack", "micro")
TO_NHWC = (0, 2, 3, 1)


@dataclass
class Activation:
    """A TFLite tensor holding an ONNX activation; ``perm`` maps ONNX axes to the TFLite layout."""

    index: int
    perm: tuple[int, ...]
    column_order: np.ndarray | None = None  # set when a Flatten was absorbed into the next FC's weights


def static_shape(shape) -> list[int]:
    """ONNX shape with symbolic dimensions (the batch) set to 1: TFLite graphs are built for one sample."""
    return [d if isinstance(d, int) else 1 for d in shape]


def layout_perm(rank: int) -> tuple[int, ...]:
    return TO_NHWC if rank == 4 else tuple(range(rank))


def is_identity(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def moves_data(shape: tuple[int, ...], perm) -> bool:
    """A transpose moves data unless the axes longer than 1 keep their order."""
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept != sorted(kept)


INT16, INT8 = ACTIVATION_TYPES["int16"], ACTIVATION_TYPES["int8"]


def _activation_types(graph: ir.Graph) -> set[str]:
    """The integer types of GRAPH's activation QuantizeLinears: "int16", "int8" (int8 and uint8 Qs), or both."""
    types = {node.outputs[0].dtype for node in graph if node.op_type == "QuantizeLinear"}
    found = {"int16"} if ir.DataType.INT16 in types else set()
    return found | {"int8"} if types - {ir.DataType.INT16} else found


class LoweringContext:
    def __init__(self, model: ir.Model, io: str, precision: str, kernels: str = "micro"):
        if io not in IO_TYPES:
            raise RecipeError(f"--io must be one of {', '.join(IO_TYPES)}, not {io!r}")
        if kernels not in KERNELS:
            raise RecipeError(f"--kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
        self.kernels = kernels
        self.model = model
        self.onnx = model.graph
        self.float = precision == "float"
        self.io = "float" if self.float else io
        types = _activation_types(model.graph)
        self.mixed = len(types) == 2  # int16 layers in an 8-bit model
        self.base = INT8 if "int8" in types or not types else INT16  # the type of a node with no activation
        self.qtype = self.base
        self.integer = self.qtype.dtype  # the dtype of the current node's quantized activation tensors
        name = "float" if self.float else "int8+int16" if self.mixed else self.qtype.name
        self.graph = Graph(description=f"edgeq {name} (NHWC)")
        self.values: dict[int, Activation] = {}  # id(ir.Value) of a Q output -> its TFLite tensor
        self.ops: dict[str, int] = {}
        self.fused: dict[int, str] = {}  # id of a Relu/Clip folded into the op before it -> that op's name
        # Float islands (island.py): whether a node is being lowered as one, the float32 DEQUANTIZE of each int8
        # tensor an island read (by int8 tensor index) and the island outputs that only float nodes read.
        self.in_island = False
        self.dequantized: dict[int, int] = {}
        self.float_values: dict[int, Activation] = {}  # id(ir.Value) -> its float32 tensor

    def use_type(self, int16: bool) -> None:
        """The integer type of the tensors the next node reads and writes."""
        self.qtype = INT16 if int16 else INT8
        self.integer = self.qtype.dtype

    def use_type_of(self, node: ir.Node) -> None:
        """NODE's integer type: int16 where an activation it reads or writes (through a fused Relu/Clip) is int16,
        else the model's."""
        if not self.mixed:
            return
        dqs = [dq for v in node.inputs if (dq := self._dequantize_of(v)) is not None]
        reads = [self.values[id(dq.inputs[0])] for dq in dqs]
        outputs = [v for v in node.outputs if v is not None]
        after = [u for v in outputs for u, _ in v.uses() if u.op_type in ("Relu", "Clip")]
        writes = [u for v in [*outputs, *(a.outputs[0] for a in after)] for u, _ in v.uses()]
        self.use_type(
            any(self.graph.tensors[act.index].dtype == np.int16 for act in reads)
            or any(u.op_type == "QuantizeLinear" and u.outputs[0].dtype == ir.DataType.INT16 for u in writes)
        )

    def _dequantize_of(self, value: ir.Value | None) -> ir.Node | None:
        """The DequantizeLinear of a lowered activation that VALUE is, or None."""
        dq = self.producer(value)
        ok = dq is not None and dq.op_type == "DequantizeLinear" and id(dq.inputs[0]) in self.values
        return dq if ok else None

    def checkpoint(self) -> tuple:
        """What undoing a refused node needs: a lowering may add tensors and operators before it refuses."""
        return (
            len(self.graph.tensors),
            len(self.graph.operators),
            dict(self.ops),
            dict(self.values),
            dict(self.fused),
            dict(self.dequantized),
            dict(self.float_values),
        )

    def rollback(self, checkpoint: tuple) -> None:
        tensors, operators, self.ops, self.values, self.fused, self.dequantized, self.float_values = checkpoint
        del self.graph.tensors[tensors:], self.graph.operators[operators:]

    # ----------------------------------------------------------------------------------- tensors, operators

    def tensor(self, name, shape, dtype, encoding=None, data=None) -> int:
        """A new tensor; ENCODING (scale, zero point) is dropped and int8/uint8/int16 become float32 at float
        precision."""
        quantization = None
        if encoding is not None and not self.float:
            quantization = Quantization(*encoding)
        if self.float and dtype in (np.int8, np.uint8, np.int16):
            dtype = np.float32
        return self.graph.add_tensor(Tensor(name, shape, dtype, quantization, data))

    def add_op(self, builtin: Builtin, inputs, outputs, options=None) -> None:
        builtin.add_to(self.graph, inputs, outputs, options)
        self.ops[builtin.opcode] = self.ops.get(builtin.opcode, 0) + 1

    def encoding_of(self, index: int):
        """(scale, zero point) of tensor INDEX, or None for a float tensor."""
        q = self.graph.tensors[index].quantization
        return None if q is None else (q.scale[0], int(q.zero_point[0]))

    def check_shared(self, node: ir.Node, src: int, out: int) -> None:
        """SRC and OUT must carry one encoding: the operator copies, compares or interpolates stored values."""
        if not self.float and self.encoding_of(src) != self.encoding_of(out):
            raise unsupported(
                node, "input and output encodings differ; TFLite requires them equal", "attribute"
            )

    # ----------------------------------------------------------------------------------- reading the QDQ model

    @staticmethod
    def producer(value: ir.Value | None) -> ir.Node | None:
        return None if value is None else value.producer()

    @staticmethod
    def encoding(q_node: ir.Node) -> tuple[float, int]:
        scale, zero = q_node.inputs[1], q_node.inputs[2] if len(q_node.inputs) > 2 else None
        if scale.const_value is None or (zero is not None and zero.const_value is None):
            raise unsupported(q_node, "its scale or zero point is computed at run time", "dynamic")
        return float(scale.const_value.numpy()), int(zero.const_value.numpy()) if zero is not None else 0

    def q_encoding(self, q_node: ir.Node) -> tuple[np.float32, int]:
        """The encoding of Q_NODE's output on the graph's integer type (a uint8 Q is the int8 grid shifted)."""
        scale, zero_point = self.encoding(q_node)
        dtype = q_node.outputs[0].dtype
        if dtype == ir.DataType.UINT8 and self.qtype.name == "int8":
            zero_point -= 128  # the same grid shifted: TFLite int8 kernels
        elif dtype != self.qtype.ir_dtype:
            where = "this node" if self.mixed else "this model"
            raise unsupported(
                q_node, f"the TFLite target needs all activations {self.qtype.name} in {where}, got {dtype}", "dtype"
            )
        return np.float32(scale), zero_point

    def activation(self, value: ir.Value, node: ir.Node) -> Activation:
        """The TFLite tensor of an activation input: the output of an activation Q/DQ pair. Inside a float island
        it is that tensor's float32 DEQUANTIZE, or the float32 output of an island before."""
        if self.in_island and id(value) in self.float_values:
            return self.float_values[id(value)]
        dq = self.producer(value)
        if dq is None or dq.op_type != "DequantizeLinear" or id(dq.inputs[0]) not in self.values:
            raise unsupported(node, f"reads {value.name}, which is not quantized", "not-quantized")
        act = self.values[id(dq.inputs[0])]
        if self.in_island:
            return self._dequantize(act)
        if not self.float and self.graph.tensors[act.index].dtype != self.integer:  # mixed: one type per node
            raise unsupported(node, f"reads {value.name} in another type than {self.qtype.name}", "dtype")
        return act

    def _dequantize(self, act: Activation) -> Activation:
        """The float32 DEQUANTIZE of int8 tensor ACT, emitted once however many islands read it."""
        if act.index not in self.dequantized:
            from edgeq.targets.tflite.lower.edges import DEQUANTIZE  # edges.py builds on this module

            source = self.graph.tensors[act.index]
            index = self.graph.add_tensor(Tensor(f"{source.name}_dequantized", source.shape, np.float32))
            self.add_op(DEQUANTIZE, [act.index], [index])
            self.dequantized[act.index] = index
        return Activation(self.dequantized[act.index], act.perm, act.column_order)

    def constant(self, value: ir.Value, node: ir.Node) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(integers, scales, zero points) of a constant behind a DequantizeLinear."""
        dq = self.producer(value)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0].const_value is None:
            kept_float = value.const_value is not None and value.dtype == ir.DataType.FLOAT
            why = (
                ": the node was kept float (--exclude, or --layer ...=float), and the TFLite targets keep weighted "
                "layers integer (give it int8, int4 or int16)"
                if kept_float
                else ""
            )
            raise unsupported(node, f"input {value.name} is not a quantized constant{why}", "not-quantized")
        q = dq.inputs[0].const_value.numpy()
        scale = dq.inputs[1].const_value.numpy().astype(np.float32)
        zero = dq.inputs[2].const_value.numpy() if len(dq.inputs) > 2 and dq.inputs[2] is not None else 0
        return q, np.atleast_1d(scale), np.atleast_1d(np.asarray(zero, np.int64))

    def is_quantized_constant(self, value: ir.Value) -> bool:
        dq = self.producer(value)
        return dq is not None and dq.op_type == "DequantizeLinear" and dq.inputs[0].const_value is not None

    def follow_perm(self, node: ir.Node, rank: int) -> tuple[int, ...]:
        """The layout of a layout-agnostic op's output (elementwise, activations, copies): that of its first
        activation input of rank RANK, so a tensor already in some layout stays in it; else layout_perm(RANK)."""
        for value in node.inputs:
            if value is not None and not self.is_quantized_constant(value) and len(value.shape or ()) == rank:
                if id(value) in self.float_values:
                    return self.float_values[id(value)].perm
                dq = self.producer(value)
                if dq is not None and dq.op_type == "DequantizeLinear" and id(dq.inputs[0]) in self.values:
                    return self.values[id(dq.inputs[0])].perm
        return layout_perm(rank)

    def operand(self, value: ir.Value, node: ir.Node, out_rank: int, perm) -> int:
        """The tensor of an operand of a multi-input op: an activation in the output's layout PERM (relaid out if
        it is in another), or a per-tensor quantized constant laid out like the output (leading 1s, then PERM)."""
        if not self.is_quantized_constant(value):
            act = self.activation(value, node)
            if len(value.shape) != out_rank:
                raise unsupported(node, "broadcasting between feature maps of different rank", "layout")
            if tuple(act.perm) != tuple(perm):  # an operand in another layout is moved to the output's
                from edgeq.targets.tflite.lower.layout import relayout  # layout.py builds on this module

                act = relayout(
                    self, act, static_shape(value.shape), perm, f"{node.name}_{value.name}_relayout"
                )
            return act.index
        q, scale, zero = self.constant(value, node)
        if scale.size != 1:
            raise unsupported(node, "a per-channel quantized constant operand", "attribute")
        q = q.reshape((1,) * (out_rank - q.ndim) + q.shape).transpose(perm)
        encoding = (scale[0], int(zero[0]))
        if self.float:
            q = (q.astype(np.float32) - encoding[1]) * encoding[0]
        return self.tensor(f"{value.name}_const", q.shape, q.dtype, encoding, np.ascontiguousarray(q))

    @staticmethod
    def name_of(q_node: ir.Node) -> str:
        """The TFLite name of the tensor Q_NODE quantizes: the float value's name without "_float"."""
        return q_node.inputs[0].name.removesuffix("_float")

    def q_after(self, node: ir.Node) -> ir.Node:
        """The QuantizeLinear that NODE's output feeds (directly)."""
        users = [user for user, _ in node.outputs[0].uses()]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            raise unsupported(node, "its output is not quantized", "not-quantized")
        return users[0]

    # ----------------------------------------------------------------------------------- outputs

    def output(self, node: ir.Node, shape_onnx, perm) -> tuple[int, str]:
        """The TFLite output tensor of NODE (through a fused Relu/Clip) and the fused activation's name."""
        value = node.outputs[0]
        fused = None
        consumers = [user for user, _ in value.uses()]
        if len(consumers) == 1 and consumers[0].op_type in ("Relu", "Clip"):
            fused = consumers[0]
            self.fused[id(fused)] = node.name
            value = fused.outputs[0]
            consumers = [user for user, _ in value.uses()]
        if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
            if self.in_island:  # float nodes read it: it stays float32 (a Relu after it is its own op)
                self.fused.pop(id(fused), None)
                return self._float_output(node.outputs[0], shape_onnx, perm), "NONE"
            raise unsupported(node, "its output is not quantized by a single QuantizeLinear", "not-quantized")
        q_node = consumers[0]
        encoding = self.q_encoding(q_node)
        activation = "NONE" if fused is None else self._fused_activation(node, fused, encoding)
        shape = tuple(int(shape_onnx[p]) for p in perm)
        index = self.tensor(self.name_of(q_node), shape, self.integer, encoding)
        self.values[id(q_node.outputs[0])] = Activation(index, tuple(perm))
        return index, activation

    def _float_output(self, value: ir.Value, shape_onnx, perm) -> int:
        """A float32 tensor for island output VALUE, which float nodes read (quantized later, if at all)."""
        shape = tuple(int(shape_onnx[p]) for p in perm)
        index = self.tensor(value.name, shape, np.float32)
        self.float_values[id(value)] = Activation(index, tuple(perm))
        return index

    def _fused_activation(self, node: ir.Node, act: ir.Node, encoding) -> str:
        """TFLite's fused activation for the Relu/Clip ACT after NODE. A Clip with other bounds is still exact when
        the output's integer grid saturates inside them (then the clamp is the integer range itself)."""
        bounds = activation_bounds(act)
        if bounds is None:
            raise unsupported(node, f"{act.op_type} {act.name} has bounds that are not constant", "dynamic")
        named = {(0.0, 6.0): "RELU6", (0.0, math.inf): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}
        if bounds in named:
            return named[bounds]
        lo, hi = bounds
        scale, zero_point = float(encoding[0]), encoding[1]
        grid_lo, grid_hi = scale * (self.qtype.qmin - zero_point), scale * (self.qtype.qmax - zero_point)
        if grid_lo >= lo - 1e-6 and grid_hi <= hi + 1e-6:
            return "NONE"
        raise unsupported(node, f"Clip({lo}, {hi}) after it has no TFLite fused activation", "attribute")
