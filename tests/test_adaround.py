"""AdaRound on real models in onnxruntime: the weights stay on their grid, the layers' reconstruction error
falls, and 4-bit networks get closer to their float model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import make_convnet

from edgeq.data import ArrayData, input_specs, load_npz
from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import load_model
from edgeq.io.session import session as ort_session
from edgeq.measure.metrics import sqnr_db, top1_agreement
from edgeq.passes.adaround import AdaRoundPass
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe

MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    session = ort_session(model)
    return session.run(None, {"input": x})[0]


def _integers(model: ir.Model) -> dict[str, np.ndarray]:
    return {
        name: value.const_value.numpy().copy()
        for name, value in model.graph.initializers.items()
        if name.endswith(".weight_quantized")
    }


@pytest.fixture(scope="module")
def digits():
    model = load_model(MODELS / "digits_cnn.onnx")
    data = load_npz(MODELS / "digits_calib.npz", input_specs(model))
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, data)
    return calibration, data, np.load(MODELS / "digits_test.npz")["input"]


def test_weights_stay_on_the_grid_and_layer_errors_fall(tmp_path):
    """Conv, depthwise Conv with Clip, pointwise Conv, Gemm: every layer is handled and re-rounded only up or
    down from W / s, with the scales and the rest of the model untouched."""
    path = tmp_path / "convnet.onnx"
    onnx.save(make_convnet(), path)
    model = load_model(path)
    x = np.random.default_rng(1).normal(0, 1, (40, 3, 8, 8)).astype(np.float32)
    data = ArrayData({"input": x}, input_specs(model), "random")
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, data)
    qdq, _ = Pipeline(Recipe(weight_bits=4)).quantize(calibration)
    before = _integers(qdq)
    others = {n: v.const_value.numpy().copy() for n, v in qdq.graph.initializers.items() if n not in before}
    adaround = AdaRoundPass(calibration.model, data, weight_bits=4, iterations=200, progress=False)(qdq)

    float_nodes = {node.name: node for node in calibration.model.graph}
    assert set(adaround.layers) == {name.removesuffix(".weight_quantized") for name in before}
    assert not adaround.skipped
    for name, q in _integers(qdq).items():
        node = float_nodes[name.removesuffix(".weight_quantized")]
        w = node.inputs[1].const_value.numpy()
        scale = qdq.graph.initializers[name.replace("_quantized", "_scale")].const_value.numpy()
        if node.op_type == "Gemm":  # transB: channels on axis 0, like Conv
            assert node.attributes.get_int("transB", 0) == 1
        ratio = w / scale.reshape(-1, *[1] * (w.ndim - 1))
        assert q.dtype == np.int8 and np.abs(q).max() <= 7
        assert np.all((q == np.clip(np.floor(ratio), -7, 7)) | (q == np.clip(np.floor(ratio) + 1, -7, 7)))
    for name, array in others.items():  # scales, zero points, biases, activation encodings
        np.testing.assert_array_equal(qdq.graph.initializers[name].const_value.numpy(), array)
    # 32 training rows for the 80 weights of fc: its rounding overfits and the held-out check must refuse it
    assert adaround.layers["fc"]["error_after"] > adaround.layers["fc"]["error_before"]
    assert not adaround.layers["fc"]["adopted"]
    rows = adaround.layers.values()
    assert all(row["error_after"] < row["error_before"] for row in rows if row["adopted"])
    assert any(row["adopted"] for row in rows)
    changed = [name for name, q in _integers(qdq).items() if not np.array_equal(q, before[name])]
    assert sorted(changed) == sorted(
        f"{n}.weight_quantized" for n, row in adaround.layers.items() if row["adopted"]
    )


def test_four_bit_digits_cnn_gets_closer_to_float(digits):
    """Real digits, held-out test images: 4-bit weights with the default (sum-preserving) rounding are
    15.4 dB from the float logits; AdaRound brings them to ~23.8 dB."""
    calibration, data, x = digits
    reference = _run(calibration.model, x)
    qdq, _ = Pipeline(Recipe(weight_bits=4)).quantize(calibration)
    rounded = _run(qdq, x)
    adaround = AdaRoundPass(calibration.model, data, weight_bits=4, iterations=300, progress=False)(qdq)
    adarounded = _run(qdq, x)
    errors = np.array([(row["error_before"], row["error_after"]) for row in adaround.layers.values()])
    assert len(errors) == 5 and np.all(errors[:, 1] < errors[:, 0])  # held-out layer errors
    assert sqnr_db(reference, adarounded) > sqnr_db(reference, rounded) + 4.0
    assert top1_agreement(reference, adarounded) >= top1_agreement(reference, rounded) - 0.005


def test_eight_bit_weights_do_not_get_worse(digits):
    calibration, data, x = digits
    reference = _run(calibration.model, x)
    qdq, _ = Pipeline(Recipe()).quantize(calibration)
    rounded = _run(qdq, x)
    AdaRoundPass(calibration.model, data, iterations=200, progress=False)(qdq)
    assert sqnr_db(reference, _run(qdq, x)) > sqnr_db(reference, rounded)
    assert all(np.abs(q).max() <= 127 for q in _integers(qdq).values())


def test_same_model_on_a_busy_machine(digits):
    """Bounded by steps, not seconds: a run with a CPU-bound process on every core writes the same weights as a
    run on an idle machine."""
    calibration, data, _ = digits
    weights = []
    for busy in (False, True):
        qdq, _ = Pipeline(Recipe(weight_bits=4)).quantize(calibration)
        burners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() if busy else 0)
        ]
        try:
            adaround = AdaRoundPass(calibration.model, data, weight_bits=4, iterations=150, progress=False)(qdq)
        finally:
            for burner in burners:
                burner.kill()
        assert all(row["iterations"] == 150 for row in adaround.layers.values())
        weights.append(_integers(qdq))
    assert weights[0].keys() == weights[1].keys()
    for name, q in weights[0].items():
        np.testing.assert_array_equal(weights[1][name], q, err_msg=name)


def test_without_torch_the_error_names_the_extra(digits, monkeypatch):
    calibration, data, _ = digits
    qdq, _ = Pipeline(Recipe()).quantize(calibration)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(EdgeqError, match=r"pip install 'edgeq\[torch\]'"):
        AdaRoundPass(calibration.model, data, progress=False)(qdq)


def test_loss_sees_the_output_as_the_next_layers_do(tmp_path):
    """Equalized convnet: its depthwise Conv -> Relu6 becomes Relu -> Min(x, 6 / s_i); the loss clamps that
    layer per channel at min(6 / s_i, its output range), and a layer without activation at its output range."""
    path = tmp_path / "convnet.onnx"
    onnx.save(make_convnet(), path)
    model = load_model(path)
    x = np.random.default_rng(1).normal(0, 1, (40, 3, 8, 8)).astype(np.float32)
    data = ArrayData({"input": x}, input_specs(model), "random")
    calibration = Pipeline(Recipe(passes=["equalize"]), progress=False).calibrate(model, data)
    qdq, report = Pipeline(Recipe(passes=["equalize"])).quantize(calibration)
    layers = {layer.node.name: layer for layer in AdaRoundPass(calibration.model, data)._layers(qdq)[0]}

    ceiling = next(n for n in calibration.model.graph if n.op_type == "Min").inputs[1].const_value.numpy()
    assert np.ptp(ceiling) > 0  # equalization made the bound per channel
    encodings = report["encodings"]

    def output_range(name: str) -> tuple[float, float]:
        scale, zero_point = encodings[name]["scale"], encodings[name]["zero_point"]
        return scale * (-128 - zero_point), scale * (127 - zero_point)

    low, high = layers["dw"].bounds
    relu = next(n for n in calibration.model.graph if n.op_type == "Relu" and n.inputs[0].producer().name == "dw")
    range_high = output_range(relu.outputs[0].name)[1]
    np.testing.assert_array_equal(low.reshape(-1), 0.0)
    np.testing.assert_allclose(high.reshape(-1), np.minimum(ceiling.reshape(-1), range_high), rtol=1e-6)
    low, high = layers["pw"].bounds
    np.testing.assert_allclose([low.max(), high.min()], output_range("pw"), rtol=1e-6)
    assert low.min() == low.max() and high.min() == high.max()


@pytest.mark.slow
def test_mobilenet_v2_equalized_w8a8_logits_improve(tmp_path):
    """Per-channel W8A8 after equalization, the setting where AdaRound against the plain float model made
    MobileNetV2 worse (32 calibration views, 128 evaluation views: 15.3 -> 14.0 dB; against the clipped
    reference 18.4 dB). This cheaper setting: 16 views, 64 evaluation views, 100 steps per layer (bounded by
    steps, not seconds, so that machine load cannot change the result: with 0.3 s per layer a loaded CI machine
    gained only 1.3 dB after activation-scaled equalization)."""
    from edgeq.api.export import export_module
    from models.mobilenet_v2 import build
    from models.photos import calib_views, eval_views

    module, example = build()
    float_path = tmp_path / "mbv2.onnx"
    export_module(module, example, float_path, input_names=["input"], output_names=["logits"])
    model = load_model(float_path)
    data = ArrayData({"input": calib_views(16)}, input_specs(model), "views")
    recipe = Recipe(passes=["equalize"])
    calibration = Pipeline(recipe, progress=False).calibrate(model, data)
    qdq, _ = Pipeline(recipe).quantize(calibration)
    x = eval_views(64)
    reference = _run(load_model(float_path), x)
    rounded = _run(qdq, x)
    AdaRoundPass(
        calibration.model, data, iterations=100, samples=512, progress=False
    )(qdq)
    assert sqnr_db(reference, _run(qdq, x)) > sqnr_db(reference, rounded) + 1.5
