"""Cross-layer equalization and high-bias absorption (passes/equalize.py) on real ONNX graphs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import make_convnet

from edgeq.data import ArrayData, input_specs
from edgeq.errors import EdgeqError
from edgeq.io.session import session as ort_session
from edgeq.passes.equalize import EqualizePass
from edgeq.passes.fold_batchnorm import BN_BETA_KEY, BN_GAMMA_KEY
from edgeq.passes.preprocess import preprocess

X = np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32)


def _model() -> ir.Model:
    model = ir.serde.deserialize_model(make_convnet())
    preprocess(model)
    return model


def _run(model: ir.Model, x=X) -> np.ndarray:
    return ort_session(model).run(None, {"input": x})[0]


def _weights(model: ir.Model) -> dict[str, np.ndarray]:
    return {n.name: n.inputs[1].const_value.numpy().copy() for n in model.graph if n.op_type in ("Conv", "Gemm")}


def test_depthwise_pointwise_pair_is_equalized_and_the_function_kept():
    model = _model()
    small = X * 0.05  # no activation reaches 6 here, so Relu6 -> Relu changes nothing on these inputs
    before = _run(model, small)
    result = EqualizePass(clipped="to-relu", absorb_bias=False)(model)
    assert result.report["pairs"] == 1 and result.report["change_from_equalization"] <= 1e-4
    after = _run(model, small)
    assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()
    weights = _weights(model)
    dw_out = np.abs(weights["dw"]).reshape(8, -1).max(axis=1)  # a depthwise conv's channel i is in and out
    pw_in = np.abs(weights["pw"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(dw_out, pw_in, rtol=1e-5)


def test_clip_policies():
    kept = _model()
    original = _weights(kept)
    EqualizePass(clipped="keep", absorb_bias=False)(kept)
    assert all(np.array_equal(w, original[name]) for name, w in _weights(kept).items())  # stem feeds a residual
    assert any(n.op_type == "Clip" for n in kept.graph)

    relu = _model()
    EqualizePass(clipped="to-relu", absorb_bias=False)(relu)
    assert not any(n.op_type == "Clip" for n in relu.graph)



def test_exact_policy_keeps_relu6_as_a_per_channel_ceiling():
    model = _model()
    large = X * 20.0  # activations far beyond 6: the clip acts, and must still act per channel
    before = _run(model, large)
    result = EqualizePass(absorb_bias=False)(model)
    assert result.report["pairs"] == 1 and result.report["clips_between_pairs"] == 1
    np.testing.assert_allclose(_run(model, large), before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    minimum = next(n for n in model.graph if n.op_type == "Min")
    ceiling = minimum.inputs[1].const_value.numpy()
    assert ceiling.shape == (1, 8, 1, 1) and np.ptp(ceiling) > 0  # 6 / s_i, different per channel
    relu = minimum.inputs[0].producer()
    assert relu.op_type == "Relu" and relu.inputs[0].producer().name == "dw"
    scales = result.channel_scales[minimum.outputs[0].name]
    np.testing.assert_allclose(ceiling.reshape(-1), 6.0 / scales, rtol=1e-6)


def _model_claiming_high_bias() -> tuple[ir.Model, ir.Node, np.ndarray]:
    """The model with the depthwise layer's bias raised by 5 and BatchNorm statistics saying its pre-activation
    is ~N(bias, 0.5^2): beta >> 3|gamma|, so high-bias absorption applies; returns the model, dw and the bias."""
    model = _model()
    dw = next(n for n in model.graph if n.name == "dw")
    bias = dw.inputs[2].const_value.numpy() + 5.0
    dw.inputs[2].const_value = ir.tensor(bias, name=dw.inputs[2].name)
    dw.metadata_props[BN_BETA_KEY] = json.dumps(bias.astype(np.float64).tolist())
    dw.metadata_props[BN_GAMMA_KEY] = json.dumps([0.5] * 8)
    return model, dw, bias


def test_high_bias_absorption_moves_bias_into_the_next_layer():
    model, dw, bias = _model_claiming_high_bias()
    x = X * 0.01  # inputs for which the shifted channels stay positive: absorption is exact there
    before = _run(model, x)
    result = EqualizePass(absorb_bias=True)(model)
    assert result.report["high_bias_absorbed_pairs"] == 1
    assert (dw.inputs[2].const_value.numpy() < bias - 1.0).all()
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-4, atol=1e-4)
    # the ceiling moved with the bias: min(z, h) = min(z - c, h - c) + c
    scales = result.channel_scales["clip"]
    shift = bias / scales - dw.inputs[2].const_value.numpy()
    ceiling = next(n for n in model.graph if n.op_type == "Min").inputs[1].const_value.numpy().reshape(-1)
    np.testing.assert_allclose(ceiling, 6.0 / scales - shift, rtol=1e-4, atol=1e-5)


def test_bad_policy_is_refused():
    with pytest.raises(EdgeqError, match="clipped must be one of"):
        EqualizePass(clipped="sometimes")


def test_calibration_data_caps_absorption_so_it_stays_exact_on_that_data():
    # the statistics claim a narrow distribution; X spreads far below beta - 3 sigma
    before = _run(_model_claiming_high_bias()[0])
    statistics_only = _model_claiming_high_bias()[0]
    EqualizePass()(statistics_only)
    assert np.abs(_run(statistics_only) - before).max() > 1e-3 * np.abs(before).max()
    capped = _model_claiming_high_bias()[0]
    result = EqualizePass(data=ArrayData({"input": X}, input_specs(capped), "X"))(capped)
    assert result.report["high_bias_absorbed_pairs"] == 1  # some channels still move a part of their bias
    np.testing.assert_allclose(_run(capped), before, rtol=1e-4, atol=1e-4 * np.abs(before).max())


def _chain_model() -> ir.Model:
    """conv -> Clip(0, 6) -> depthwise conv -> Relu -> pointwise conv: one pair of each kind."""
    rng = np.random.default_rng(1)
    c = 8
    # channel gains from 0.05 to 2: activation ranges differing 40x, as in MobileNetV2's first layer
    stem = rng.normal(0, 0.5, (c, 3, 3, 3)) * np.geomspace(0.05, 2.0, c)[:, None, None, None]
    inits = [
        onnx.numpy_helper.from_array(a.astype(np.float32), name)
        for name, a in {
            "conv.w": stem,
            "conv.b": rng.normal(0, 0.1, c),
            "low": np.array(0.0),
            "high": np.array(6.0),
            "dw.w": rng.normal(0, 0.5, (c, 1, 3, 3)),
            "pw.w": rng.normal(0, 0.4, (4, c, 1, 1)),
        }.items()
    ]
    nodes = [
        onnx.helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Clip", ["conv", "low", "high"], ["clip"], name="clip"),
        onnx.helper.make_node("Conv", ["clip", "dw.w"], ["dw"], name="dw", pads=[1, 1, 1, 1], group=c),
        onnx.helper.make_node("Relu", ["dw"], ["relu"], name="relu"),
        onnx.helper.make_node("Conv", ["relu", "pw.w"], ["output"], name="pw"),
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "chain",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 4, 8, 8])],
        initializer=inits,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = ir.serde.deserialize_model(model)
    preprocess(model)
    return model


def _channel_max(model: ir.Model, name: str, x=X) -> np.ndarray:
    proto = ir.serde.serialize_model(model)
    proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort_session(proto)
    values = session.run([name], {"input": x})[0]
    return np.abs(values).max(axis=(0, 2, 3))


def test_activation_scaling_equalizes_activation_ranges_and_keeps_the_function():
    model = _chain_model()
    large = X * 20.0  # the Relu6 acts: the per-channel ceiling must keep it exact
    before, before_large = _run(model), _run(model, large)
    assert np.ptp(_channel_max(model, "clip")) > 1.0
    data = ArrayData({"input": X}, input_specs(model), "X")
    result = EqualizePass(scaling="activations", absorb_bias=False, data=data)(model)
    assert result.report["pairs"] == 2 and result.report["scaling"] == "activations"
    np.testing.assert_allclose(_run(model), before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    np.testing.assert_allclose(_run(model, large), before_large, rtol=1e-5, atol=1e-5 * np.abs(before_large).max())
    # conv -> depthwise: every channel of the activation between them now spans the widest channel's range
    ranges = _channel_max(model, "clip")
    np.testing.assert_allclose(ranges, ranges.max(), rtol=1e-5)
    # depthwise -> pointwise: activation channel i and the pointwise column i share the range sqrt(a_i r2_i)
    pw = next(n for n in model.graph if n.name == "pw").inputs[1].const_value.numpy()
    np.testing.assert_allclose(_channel_max(model, "relu"), np.abs(pw).max(axis=(0, 2, 3)), rtol=1e-5)


def test_activation_scaling_needs_data():
    with pytest.raises(EdgeqError, match="needs calibration data"):
        EqualizePass(scaling="activations")
