"""Cast integers to float where they enter: a Cast after integer data movement moves before it.

Exporters turn an integer input into a float tensor late, after reshaping it as an integer: a transformer's
attention mask is ``Cast(Unsqueeze(Unsqueeze(mask)), to=FLOAT)`` and its masked mean pooling
``Cast(Expand(Unsqueeze(mask)), to=FLOAT)``. Moving and repeating elements commutes with an elementwise Cast,

    Cast(D(x, params...)) = D(Cast(x), params...)        D in Unsqueeze, Squeeze, Reshape, Flatten, Expand,
                                                         Transpose, Tile, Slice, Identity (data: input 0)

so each such Cast is moved up its chain until it reads what is not data movement (a graph input, usually). The
data movement then runs on a float tensor, which the quantization plan treats like any other (one encoding
through the chain), and the Cast of the integer input is one quantized source (edgeq.quantization
.integer_sources): the TFLite graph casts its int32 input to float32 and quantizes it. Identical Casts of one
tensor become one. An integer tensor that other nodes still read keeps its data movement for them.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

MOVES = {"Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Transpose", "Tile", "Slice", "Identity"}


def _is_integer(value: ir.Value | None) -> bool:
    """VALUE holds integers: its type says so, or (untyped, before shape inference) the data it moves does."""
    while value is not None and value.dtype is None:
        producer = value.producer()
        if producer is None or producer.op_type not in MOVES or not producer.inputs:
            return False
        value = producer.inputs[0]
    return value is not None and value.dtype.is_integer()


def _movable(cast: ir.Node) -> ir.Node | None:
    """The data-movement node of integers that CAST (to float32) reads, if any."""
    if cast.op_type != "Cast" or cast.domain not in ("", "ai.onnx") or cast.inputs[0] is None:
        return None
    if cast.attributes.get_int("to", 0) != ir.DataType.FLOAT:
        return None
    mover = cast.inputs[0].producer()
    if mover is None or mover.op_type not in MOVES or mover.domain not in ("", "ai.onnx") or not mover.inputs:
        return None
    return mover if _is_integer(mover.inputs[0]) else None


class CastIntegersFirstPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        casts: dict[int, ir.Value] = {}  # id of an integer value -> its one float32 Cast
        moved = True
        while moved:
            moved = False
            for cast in list(graph):
                mover = _movable(cast)
                if mover is None:
                    continue
                self._move(graph, cast, mover, casts)
                moved = modified = True
        if modified:
            common_passes.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _move(graph: ir.Graph, cast: ir.Node, mover: ir.Node, casts: dict[int, ir.Value]) -> None:
        """Replace CAST by MOVER applied to the float32 Cast of MOVER's integer input."""
        data = mover.inputs[0]
        new_nodes = []
        if id(data) not in casts:
            early = ir.node(
                "Cast", [data], {"to": ir.DataType.FLOAT}, name=f"{cast.name}_early" if cast.name else None
            )
            early.outputs[0].dtype, early.outputs[0].shape = ir.DataType.FLOAT, data.shape
            early.outputs[0].name = f"{data.name}_float32"
            casts[id(data)] = early.outputs[0]
            new_nodes.append(early)
        moved = ir.node(
            mover.op_type,
            [casts[id(data)], *mover.inputs[1:]],
            {name: attribute for name, attribute in mover.attributes.items()},
            domain=mover.domain,
            name=f"{mover.name}_float" if mover.name else None,
        )
        result, old = moved.outputs[0], cast.outputs[0]
        result.dtype, result.shape = ir.DataType.FLOAT, old.shape
        new_nodes.append(moved)
        ir.convenience.replace_nodes_and_values(graph, cast, [cast], new_nodes, [old], [result])
