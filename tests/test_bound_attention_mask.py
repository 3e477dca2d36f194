"""Additive attention masks (passes/bound_attention_mask.py, the Softmax-input span of edgeq/quantization/plan.py):
the lowest-float32 sentinel becomes -10^4 without changing the float model's outputs by one bit, and the quantized
attention keeps its function (masked weights 0, the others within a few output steps of fp32) in ONNX Runtime
and in a bit-exact .tflite, where it used to collapse to uniform weights (and abort LiteRT's ADD)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

import edgeq
from edgeq.io.session import session
from edgeq.passes.bound_attention_mask import MASK_BOUND, BoundAttentionMaskPass

SHAPE = (1, 4, 8)


def _attention(sentinel: float) -> onnx.ModelProto:
    """Softmax(scores * 0.5 + Unsqueeze((1 - float(mask)) * SENTINEL)), as Hugging Face exports write it."""
    nodes = [
        helper.make_node("Mul", ["scores", "half"], ["scaled"]),
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "m"], ["inverted"]),
        helper.make_node("Mul", ["inverted", "sentinel"], ["bias"]),
        helper.make_node("Unsqueeze", ["bias", "axis1"], ["bias3"]),
        helper.make_node("Add", ["scaled", "bias3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["weights"], axis=-1),
    ]
    inits = [
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("sentinel", TensorProto.FLOAT, [], [sentinel]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, *SHAPE[1:]]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, [None, SHAPE[2]]),
        ],
        [helper.make_tensor_value_info("weights", TensorProto.FLOAT, [None, *SHAPE[1:]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _data(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, SHAPE[2] + 1, count)  # real tokens first, then padding
    mask = (np.arange(SHAPE[2])[None] < lengths[:, None]).astype(np.int64)
    return {"scores": (rng.normal(size=(count, *SHAPE[1:])) * 4).astype(np.float32), "mask": mask}


def test_the_sentinel_is_bounded_and_the_float_outputs_are_unchanged():
    proto = _attention(float(np.finfo(np.float32).min))
    model = ir.serde.deserialize_model(proto)
    assert BoundAttentionMaskPass()(model).modified
    assert float(model.graph.initializers["sentinel"].const_value.numpy()) == -MASK_BOUND
    data = _data(32, 0)
    before = session(proto).run(None, data)[0]
    after = session(ir.serde.serialize_model(model)).run(None, data)[0]
    np.testing.assert_array_equal(before, after)
    assert not BoundAttentionMaskPass()(model).modified  # -10^4 is left as it is


def test_a_large_constant_off_the_mask_path_is_left_alone():
    """A constant read by a node that is not part of a mask computation (here a MatMul weight) is not touched."""
    proto = _attention(float(np.finfo(np.float32).min))
    proto.graph.node.append(helper.make_node("MatMul", ["weights", "sentinel_matrix"], ["projected"]))
    proto.graph.initializer.append(helper.make_tensor("sentinel_matrix", TensorProto.FLOAT, [8, 2], [-1e6] * 16))
    proto.graph.output.append(helper.make_tensor_value_info("projected", TensorProto.FLOAT, None))
    model = ir.serde.deserialize_model(proto)
    BoundAttentionMaskPass()(model)
    assert (model.graph.initializers["sentinel_matrix"].const_value.numpy() == -1e6).all()


def test_quantized_masked_attention_keeps_its_function_in_onnxruntime_and_tflite(tmp_path):
    proto = _attention(float(np.finfo(np.float32).min))
    onnx.save(proto, tmp_path / "attention.onnx")
    np.savez(tmp_path / "calib.npz", **_data(64, 1))
    evaluation = _data(32, 2)
    np.savez(tmp_path / "eval.npz", **evaluation)
    result = edgeq.convert(
        tmp_path / "attention.onnx",
        tmp_path / "calib.npz",
        outdir=tmp_path / "out",
        targets=["onnxruntime", "tflite"],
        eval_data=tmp_path / "eval.npz",
    )
    assert result.targets["tflite"]["verification"]["bit_exact"]
    want = session(proto).run(None, evaluation)[0]
    got = session(tmp_path / "out" / "attention.qdq.onnx").run(None, evaluation)[0]
    masked = np.broadcast_to(evaluation["mask"][:, None, :] == 0, want.shape)
    assert (got[masked] == 0).all()
    # the logits' step is 32/255 (the span a Softmax input keeps): weights within 0.04; uniform ones are 0.5 off
    assert np.abs(got - want).max() <= 0.04
