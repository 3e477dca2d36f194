"""Bias correction (passes.bias_correction): the math, the sequential schedule, and the effect on real models."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import make_convnet
from onnx import TensorProto, helper, numpy_helper

from edgeq.data import ArrayData, input_specs
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.measure.metrics import sqnr_db, top1_agreement
from edgeq.passes.batchnorm_moments import clipped_normal_mean
from edgeq.passes.bias_correction import BiasCorrectionPass
from edgeq.passes.clipped_reference import clipped_reference
from edgeq.passes.fold_batchnorm import batchnorm_statistics
from edgeq.pipeline import Pipeline
from edgeq.quantization.qparams import BIAS_LIMIT
from edgeq.quantization.recipe import Recipe

LAYERS = ("node_Conv_0", "dw", "pw", "fc")  # BatchNorm folding renamed the stem conv
STEM = LAYERS[0]


def _session(model: ir.Model, outputs: list[str]) -> ort.InferenceSession:
    proto = to_proto(model)
    del proto.graph.output[:]
    for name in outputs:
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return ort_session(proto)


def _layer_means(model: ir.Model, layers, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean of each layer's (pre-activation) output over X."""
    nodes = {node.name: node for node in model.graph}
    outputs = [nodes[name].outputs[0].name for name in layers]
    results = _session(model, outputs).run(outputs, {"input": x})
    return {
        name: y.mean(axis=tuple(a for a in range(y.ndim) if a != 1), dtype=np.float64)
        for name, y in zip(layers, results, strict=True)
    }


def _initializer(model: ir.Model, name: str) -> np.ndarray:
    return model.graph.initializers[name].const_value.numpy()


@pytest.fixture
def convnet_qdq():
    """The conftest convnet calibrated on 64 samples: (float model, data, QDQ model, the samples)."""
    x = np.random.default_rng(1).normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    model = ir.serde.deserialize_model(make_convnet())
    data = ArrayData({"input": x}, input_specs(model), "samples")
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, data)
    qdq, _ = Pipeline(Recipe()).quantize(calibration)
    return calibration.model, data, qdq, x


def test_clipped_normal_mean_matches_sampling():
    rng = np.random.default_rng(0)
    mean = np.array([-1.0, 0.0, 0.5, 3.0, 7.0, 2.0])
    std = np.array([0.5, 1.0, 2.0, 2.5, 1.0, 0.0])
    z = mean + std * rng.standard_normal((400_000, mean.size))
    for low, high in ((0.0, np.inf), (0.0, 6.0), (-np.inf, 1.0)):
        sampled = np.clip(z, low, high).mean(axis=0)
        np.testing.assert_allclose(clipped_normal_mean(mean, std, low, high), sampled, atol=0.01)


def test_empirical_is_sequential_and_keeps_the_qdq_structure(convnet_qdq):
    float_model, data, qdq, x = convnet_qdq
    ops_before = sorted(node.op_type for node in qdq.graph)
    reference = clipped_reference(qdq, float_model)
    float_before = _layer_means(float_model, LAYERS, x)
    quant_before = _layer_means(qdq, LAYERS, x)

    correction = BiasCorrectionPass(float_model, data, progress=False)(qdq)

    # the bias-less pointwise conv got an int32 bias with scale s_in * s_w; nothing else changed
    assert sorted(node.op_type for node in qdq.graph) == sorted([*ops_before, "DequantizeLinear"])
    pw = next(node for node in qdq.graph if node.name == "pw")
    assert pw.inputs[2].producer().inputs[0].name == "pw.bias_quantized"
    input_scale = pw.inputs[0].producer().inputs[1].const_value.numpy()
    np.testing.assert_array_equal(
        _initializer(qdq, "pw.bias_scale"), np.float32(input_scale) * _initializer(qdq, "pw.weight_scale")
    )
    assert _initializer(qdq, "pw.bias_quantized").dtype == np.int32
    assert set(correction.corrections) == set(LAYERS) and not correction.skipped
    assert correction.passes == 1 + len(LAYERS)  # a chain: one wave per layer, plus the reference pass

    # Sequential semantics, checked on the whole corrected model: every layer's mean now equals the
    # reference's up to the rounding of its correction to the bias grid (half a step), which holds only if
    # each layer was measured after every layer upstream of it had been corrected.
    reference_means = _layer_means(reference, LAYERS, x)
    quant_after = _layer_means(qdq, LAYERS, x)
    for name in LAYERS:
        half_step = _initializer(qdq, f"{name}.bias_scale") / 2
        np.testing.assert_array_less(np.abs(quant_after[name] - reference_means[name]), half_step + 1e-6)
    # ... and against the float model the mean error per channel shrinks in every layer
    for name in LAYERS:
        error_before = np.abs(quant_before[name] - float_before[name]).mean()
        error_after = np.abs(quant_after[name] - float_before[name]).mean()
        assert error_after < error_before, name
    for name in LAYERS:
        assert np.abs(_initializer(qdq, f"{name}.bias_quantized")).max() <= BIAS_LIMIT


def _conv_channel_means(weight: np.ndarray, x: np.ndarray, **attributes) -> np.ndarray:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attributes)],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort_session(model)
    return session.run(None, {"x": x})[0].mean(axis=(0, 2, 3), dtype=np.float64)


def test_analytic_matches_the_weight_error_on_inputs_with_the_batchnorm_statistics(convnet_qdq):
    float_model, _, qdq, _ = convnet_qdq
    float_nodes = {node.name: node for node in float_model.graph}
    dw_float = float_nodes["dw"].inputs[1].const_value.numpy()
    correction = BiasCorrectionPass(float_model, None, mode="analytic", progress=False)(qdq)

    assert set(correction.corrections) == {"dw"}
    assert "graph input" in correction.skipped[STEM]
    assert "BatchNorm" in correction.skipped["pw"]  # Clip after dw, which has no BatchNorm
    assert "MaxPool" in correction.skipped["fc"]
    # The claim: for inputs distributed as the BatchNorm statistics say (relu(N(beta, gamma^2)), the same at
    # every position), the depthwise conv's mean weight error, padded borders included, is what was removed.
    gamma, beta = batchnorm_statistics(float_nodes[STEM])
    rng = np.random.default_rng(0)
    x = np.maximum(beta[:, None, None] + gamma[:, None, None] * rng.standard_normal((4000, 8, 8, 8)), 0)
    dw_dq = next(node for node in qdq.graph if node.name == "dw").inputs[1].producer()
    weight_q = (
        _initializer(qdq, "dw.weight_quantized") * _initializer(qdq, "dw.weight_scale")[:, None, None, None]
    )
    assert dw_dq.attributes.get_int("axis") == 0
    error = _conv_channel_means(weight_q - dw_float, x.astype(np.float32), pads=[1, 1, 1, 1], group=8)
    step = _initializer(qdq, "dw.bias_scale")
    # the applied correction is the exact one rounded to the bias grid: within half a step per channel
    np.testing.assert_array_less(
        np.abs(correction.corrections["dw"] + error), step / 2 + 0.01 * np.abs(error)
    )
    assert np.abs(error).max() > 4 * step.max()  # the check has something to see


def test_empirical_needs_data_and_modes_are_checked():
    from edgeq.errors import EdgeqError

    model = ir.serde.deserialize_model(make_convnet())
    with pytest.raises(EdgeqError, match="needs calibration data"):
        BiasCorrectionPass(model, None)
    with pytest.raises(EdgeqError, match="mode"):
        BiasCorrectionPass(model, None, mode="exact")


@pytest.mark.slow
def test_mobilenet_v2_logits_improve(tmp_path):
    """Per-channel weights with empirical correction, per-tensor weights with analytic correction."""
    from conftest import calibrated_mobilenet_v2

    from models.photos import eval_views

    float_path, calibration = calibrated_mobilenet_v2(tmp_path, calib_views=32)
    data = ArrayData({"input": _calib_views(32)}, input_specs(calibration.model), "views")
    views = eval_views(48, seed=7)
    reference = _run(calibration.model, views)
    for recipe, mode, gain in ((Recipe(), "empirical", 0.8), (Recipe(per_channel=False), "analytic", 0.6)):
        qdq, _ = Pipeline(recipe).quantize(calibration, "uint8")
        before = _run(qdq, views)
        BiasCorrectionPass(
            calibration.model, data if mode == "empirical" else None, mode=mode, progress=False
        )(qdq)
        after = _run(qdq, views)
        assert sqnr_db(reference, after) > sqnr_db(reference, before) + gain, mode
        assert top1_agreement(reference, after) >= top1_agreement(reference, before) - 0.03, mode


def _calib_views(n: int) -> np.ndarray:
    from models.photos import calib_views

    return calib_views(n)


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    session = ort_session(to_proto(model))
    return np.concatenate([session.run(None, {"input": x[i : i + 16]})[0] for i in range(0, len(x), 16)])
