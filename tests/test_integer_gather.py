"""The ONNX Runtime artifact gathers the integers of an embedding table, not its dequantized floats
(passes/integer_gather.py): identical outputs, and `undo` gives the TFLite lowering its graph back."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from ops_cases import VOCABULARY, quantized
from test_ops_gather import _embedding_model

from edgeq.io.onnx_model import clone_model, model_bytes
from edgeq.io.session import session
from edgeq.passes import integer_gather
from edgeq.reference.executor import run_all_semantics
from edgeq.reference.interface import model_inputs
from edgeq.targets.tflite.lower import lower


def _qdq(per_channel: bool) -> ir.Model:
    """word[ids] -> Add of a learned vector (so the lookup's output is a quantized tensor that feeds an op)."""
    rng = np.random.default_rng(3)
    proto = _embedding_model(rng, tail=[helper.make_node("Add", ["emb", "bias"], ["y"])])
    proto.graph.initializer.append(
        helper.make_tensor("bias", 1, [8], rng.normal(size=8).astype(np.float32).tolist())
    )
    return quantized(proto, [], [("ids", (1, 6))], per_channel=per_channel)


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


@pytest.mark.parametrize("per_channel", [True, False])
def test_the_lookup_reads_the_integer_table_and_computes_the_same(per_channel, tmp_path):
    model = _qdq(per_channel)
    rewritten = clone_model(model)
    assert integer_gather.gather_integers(rewritten) == 1
    table = next(n for n in rewritten.graph if n.op_type == "Gather" and n.inputs[0].const_value is not None)
    assert table.inputs[0].dtype == ir.DataType.INT8  # no DequantizeLinear of the whole table any more
    if per_channel:
        assert "Cast" in _ops(rewritten) and "Mul" in _ops(rewritten)
    ids = np.random.default_rng(4).integers(0, VOCABULARY, (1, 6))
    ids[0, :2] = [0, VOCABULARY - 1]  # the first and last rows
    before, after = tmp_path / "before.onnx", tmp_path / "after.onnx"
    before.write_bytes(model_bytes(model))
    after.write_bytes(model_bytes(rewritten))
    np.testing.assert_array_equal(
        session(after).run(None, {"ids": ids})[0], session(before).run(None, {"ids": ids})[0]
    )


@pytest.mark.parametrize("per_channel", [True, False])
def test_undo_gives_the_lowering_the_graph_it_gave_before(per_channel):
    model = _qdq(per_channel)
    rewritten = clone_model(model)
    integer_gather.gather_integers(rewritten)
    assert integer_gather.undo(rewritten) == 1
    assert _ops(rewritten) == _ops(model)
    original, restored = lower(clone_model(model)).graph, lower(rewritten).graph
    assert [op.opcode for op in restored.operators] == [op.opcode for op in original.operators]
    inputs = model_inputs(original, {"ids": np.arange(6).reshape(1, 6) * 7})
    expected, got = run_all_semantics(original, inputs), run_all_semantics(restored, inputs)
    for semantics in expected:
        for a, b in zip(expected[semantics], got[semantics], strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_gather_of_an_activation_is_left_alone():
    """Only constant tables: a Gather that reads a dequantized activation already runs on int8 in a QDQ unit."""
    rng = np.random.default_rng(5)
    proto = _embedding_model(rng, tail=[
        helper.make_node("Gather", ["emb", "positions"], ["y"], axis=1),
    ])
    proto.graph.initializer.append(helper.make_tensor("positions", 7, [2], [0, 3]))
    model = quantized(proto, [], [("ids", (1, 6))])
    assert integer_gather.gather_integers(model) == 1  # the table's lookup, not the second Gather
