"""The TFLite target on whole models: every integer runtime agrees exactly on the digits CNN and MobileNetV2, and
LiteRT's default kernels keep MobileNetV2's accuracy; the model's float inputs are laid out as the .tflite wants.
Single ops are in test_target_tflite.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from tflite_cases import assert_bit_exact

from edgeq.data import ArrayData, input_specs
from edgeq.io.session import session as ort_session
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.interface import float_outputs, model_inputs
from edgeq.targets.tflite.lower import lower
from edgeq.tflite_format.flatbuffer import read, write


def _bit_exact_on(model_bytes: bytes, x: np.ndarray) -> None:
    graph = read(model_bytes)
    for i in range(len(x)):
        assert_bit_exact(model_bytes, model_inputs(graph, {"input": x[i : i + 1]}))


@pytest.mark.slow
def test_digits_cnn_is_bit_exact_on_every_test_image():
    from conftest import REPO

    from edgeq.io.onnx_model import load_model

    model = load_model(REPO / "models" / "digits_cnn.onnx")
    calib = np.load(REPO / "models" / "digits_calib.npz")["input"]
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData({"input": calib}, input_specs(model), "calib"))
    qdq, _ = Pipeline(Recipe()).quantize(calibration, "int8")
    lowered = lower(qdq)
    assert lowered.ops == {
        "ADD": 1, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "MEAN": 1, "PAD": 1, "RESHAPE": 1
    }  # fmt: skip
    _bit_exact_on(write(lowered.graph), np.load(REPO / "models" / "digits_test.npz")["input"])


@pytest.mark.slow
def test_mobilenet_v2_is_bit_exact_and_as_accurate_as_the_onnx_model(tmp_path):
    """torchvision MobileNetV2: the three integer runtimes agree exactly, and LiteRT's default kernels keep the
    logits SQNR of the ONNX Runtime QDQ model with the same scales."""
    from conftest import calibrated_mobilenet_v2

    from edgeq.measure.metrics import sqnr_db
    from models.photos import eval_views

    float_path, calibration = calibrated_mobilenet_v2(tmp_path)
    qdq, _ = Pipeline(Recipe()).quantize(calibration, "int8")
    lowered = lower(qdq)
    assert (
        lowered.ops["CONV_2D"] == 35
        and lowered.ops["DEPTHWISE_CONV_2D"] == 17
        and "TRANSPOSE" not in lowered.ops
    )
    model_bytes = write(lowered.graph)
    views = eval_views(24, seed=5)
    _bit_exact_on(model_bytes, views[:2])
    graph = read(model_bytes)
    from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter

    interpreter = litert_interpreter(model_bytes, kernels="default")
    tflite = np.concatenate(
        [
            float_outputs(graph, invoke_litert(interpreter, model_inputs(graph, {"input": v[None]})))[0]
            for v in views
        ]
    )
    fp32 = ort_session(float_path).run(None, {"input": views})[0]
    qdq_onnx = ort_session(qdq).run(None, {"input": views})[0]
    assert abs(sqnr_db(fp32, tflite) - sqnr_db(fp32, qdq_onnx)) < 0.5


def test_model_inputs_take_the_onnx_layout_when_the_shape_fits_both():
    """C = H = W: an NCHW batch must still be transposed (it once was passed through as if NHWC)."""
    from edgeq.tflite_format.flatbuffer import Graph, Quantization, Tensor

    graph = Graph()
    graph.inputs = [graph.add_tensor(Tensor("x", (1, 2, 2, 2), np.dtype(np.int8), Quantization(0.5, 0)))]
    nchw = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    (got,) = model_inputs(graph, {"x": nchw})
    np.testing.assert_array_equal(got, (nchw * 2).transpose(0, 2, 3, 1).astype(np.int8))
    nhwc = np.zeros((3, 4, 5, 2), np.float32)  # already NHWC for a [1, 4, 5, 2] input: accepted as it is
    graph.tensors[0].shape = (1, 4, 5, 2)
    assert model_inputs(graph, {"x": nhwc})[0].shape == (3, 4, 5, 2)
