"""passes/layer_norm_sums.py: a residual Add before a LayerNormalization written as Sum keeps ONNX Runtime from
fusing the pair into its slower SkipLayerNormalization, with the same outputs; ``undo`` restores the Add."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper
from ops_cases import onnx_model

from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session
from edgeq.passes import layer_norm_sums
from edgeq.targets.onnxruntime.fusion import fusion_report

SHAPE = [1, 16, 32]


def _residual_block() -> ir.Model:
    rng = np.random.default_rng(0)
    inits = [("gamma", rng.uniform(0.5, 1.5, SHAPE[-1]).astype(np.float32)), ("beta", np.zeros(SHAPE[-1], np.float32))]
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("Add", ["x", "h"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1),
    ]
    return ir.from_proto(onnx_model(nodes, [("x", SHAPE)], [("y", TensorProto.FLOAT, SHAPE)], inits, 17))


def test_sum_escapes_the_skip_layer_norm_fusion_with_identical_outputs(tmp_path):
    x = {"x": np.random.default_rng(1).normal(0, 3, SHAPE).astype(np.float32)}
    before, after = tmp_path / "add.onnx", tmp_path / "sum.onnx"
    model = _residual_block()
    before.write_bytes(to_proto(model).SerializeToString())
    assert layer_norm_sums.sums_before_layer_norms(model) == 1
    after.write_bytes(to_proto(model).SerializeToString())
    assert fusion_report(before).op_counts.get("SkipLayerNormalization") == 1
    assert "SkipLayerNormalization" not in fusion_report(after).op_counts
    # the same function; the fused kernel rounds its mean and variance its own way
    np.testing.assert_allclose(session(before).run(None, x)[0], session(after).run(None, x)[0], rtol=1e-5, atol=1e-5)
    assert layer_norm_sums.undo(model) == 1
    assert [n.op_type for n in model.graph] == ["Relu", "Add", "LayerNormalization"]


def test_an_add_read_by_others_is_left_alone():
    model = _residual_block()
    model.graph.outputs.append(next(n for n in model.graph if n.op_type == "Add").outputs[0])
    assert layer_norm_sums.sums_before_layer_norms(model) == 0
