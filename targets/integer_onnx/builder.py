"""The ONNX graph under construction, and where every TFLite tensor lives in it.

Each converted TFLite tensor becomes one ONNX tensor plus a layout: ``perm[i]`` is the TFLite axis stored on ONNX
axis i. Rank-4 activations are NCHW (perm (0, 3, 1, 2)), because ConvInteger and MaxPool only exist in NCHW and
the model's interface is NCHW; everything else keeps TFLite's order unless a reduction left its axes permuted.
An op that needs another layout asks for it with :meth:`Builder.operand`, which transposes only when data moves
(moving size-1 axes is a Reshape).

The batch axis is axis 0 in every layout and is left symbolic: the TFLite graph describes one sample, and like
the integer reference executor the ONNX model runs any number of samples stacked on axis 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper, numpy_helper

from edgeq.errors import EdgeqError
from edgeq.tflite_format.flatbuffer import Graph, Operator, Tensor

NCHW = (0, 3, 1, 2)  # TFLite NHWC axes stored on ONNX axes 0..3


def layout_for_rank(rank: int) -> tuple[int, ...]:
    return NCHW if rank == 4 else tuple(range(rank))


def moves_data(shape: tuple[int, ...], perm) -> bool:
    """A transpose moves data unless the axes longer than 1 keep their order."""
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept != sorted(kept)


@dataclass
class Value:
    name: str
    perm: tuple[int, ...]


class Builder:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = []
        self.initializers = []
        self.values: dict[int, Value] = {}
        self._counts: dict[str, int] = {}
        self.prefix = ""  # names the TFLite operator being converted

    # ----------------------------------------------------------------------------------------------- names

    def fresh(self, hint: str) -> str:
        base = f"{self.prefix}{hint}"
        count = self._counts.get(base, 0)
        self._counts[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def start(self, number: int, op: Operator) -> None:
        self.prefix = f"op{number}_{op.opcode.lower()}/"

    # -------------------------------------------------------------------------------------- nodes, constants

    def constant(self, array, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], hint: str | None = None, output: str | None = None, **attrs):
        """Add one node; returns its (single) output name."""
        output = output or self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{output}:{op_type}", **attrs))
        return output

    def cast(self, name: str, dtype) -> str:
        return self.node("Cast", [name], f"{np.dtype(dtype).name}", to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    # ------------------------------------------------------------------------------------------ TFLite tensors

    def tensor(self, index: int) -> Tensor:
        return self.graph.tensors[index]

    def define(self, index: int, name: str, perm) -> None:
        self.values[index] = Value(name, tuple(perm))

    def perm_of(self, index: int) -> tuple[int, ...]:
        if index in self.values:
            return self.values[index].perm
        return layout_for_rank(len(self.tensor(index).shape))

    def operand(self, index: int, perm=None) -> str:
        """Tensor INDEX laid out with PERM (default: its own layout); constants are broadcast to PERM's rank."""
        tensor = self.tensor(index)
        if tensor.is_constant:
            array = np.asarray(tensor.data)
            if perm is None:
                perm = layout_for_rank(array.ndim)
            array = array.reshape((1,) * (len(perm) - array.ndim) + array.shape).transpose(perm)
            return self.constant(array, tensor.name.replace("/", "_") or "constant")
        if index not in self.values:
            raise EdgeqError(f"tensor {tensor.name} is used before it is computed")
        value = self.values[index]
        if perm is None or tuple(perm) == value.perm:
            return value.name
        if len(perm) != len(value.perm):
            raise EdgeqError(f"tensor {tensor.name}: rank {len(value.perm)} cannot be laid out as {perm}")
        # Stored axis i holds TFLite axis value.perm[i]; the target's axis j must hold TFLite axis perm[j].
        transpose = [value.perm.index(axis) for axis in perm]
        stored_shape = tuple(tensor.shape[a] for a in value.perm)
        if not moves_data(stored_shape, transpose):
            target_shape = [-1] + [tensor.shape[a] for a in perm[1:]]
            return self.node("Reshape", [value.name, self.constant(np.array(target_shape, np.int64), "shape")])
        return self.node("Transpose", [value.name], "transpose", perm=transpose)

    def shape_constant(self, tflite_shape, perm=None) -> str:
        """An ONNX Reshape target for a TFLite shape: the batch axis becomes -1 (any number of samples)."""
        shape = list(tflite_shape) if perm is None else [tflite_shape[a] for a in perm]
        return self.constant(np.array([-1] + shape[1:], np.int64), "shape")

    def channel_constant(self, array, dtype, perm, channel_axis: int = -1) -> np.ndarray:
        """Per-channel ARRAY shaped to broadcast along the TFLite axis CHANNEL_AXIS of a tensor laid out as PERM."""
        array = np.asarray(array, dtype)
        if array.size == 1:
            return array.reshape(())
        axis = list(perm).index(channel_axis % len(perm))
        return array.reshape((-1,) + (1,) * (len(perm) - 1 - axis))
