"""Shared fixtures: small real ONNX models built with onnx.helper (no torch needed)."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the models/ zoo is importable in tests
    sys.path.insert(0, str(REPO))
# the third-party corpus beside the checkout (CI has shared/ beside the clone), or EDGEQ_CORPUS
CORPUS = __import__("pathlib").Path(os.environ.get("EDGEQ_CORPUS", REPO.parent / "shared" / "corpus"))


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def make_convnet(seed: int = 0, opset: int = 13, batch: int | str = "N") -> onnx.ModelProto:
    """Conv-BN-Relu, depthwise Conv-Clip(0,6), pointwise Conv, residual Add, MaxPool, GAP, Flatten, Gemm, Softmax."""
    rng = np.random.default_rng(seed)
    c = 8
    inits = [
        _init("stem.w", rng.normal(0, 0.3, (c, 3, 3, 3)).astype(np.float32)),
        _init("stem.b", rng.normal(0, 0.1, c).astype(np.float32)),
        _init("bn.gamma", rng.uniform(0.5, 1.5, c).astype(np.float32)),
        _init("bn.beta", rng.normal(0, 0.2, c).astype(np.float32)),
        _init("bn.mean", rng.normal(0, 0.2, c).astype(np.float32)),
        _init("bn.var", rng.uniform(0.5, 1.5, c).astype(np.float32)),
        _init("dw.w", rng.normal(0, 0.5, (c, 1, 3, 3)).astype(np.float32)),
        _init("dw.b", rng.normal(0, 0.1, c).astype(np.float32)),
        _init("clip.min", np.array(0.0, np.float32)),
        _init("clip.max", np.array(6.0, np.float32)),
        _init("pw.w", rng.normal(0, 0.4, (c, c, 1, 1)).astype(np.float32)),
        _init("fc.w", rng.normal(0, 0.5, (10, c)).astype(np.float32)),
        _init("fc.b", rng.normal(0, 0.1, 10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "stem.w", "stem.b"], ["stem"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["stem", "bn.gamma", "bn.beta", "bn.mean", "bn.var"], ["bn"], name="bn"
        ),
        helper.make_node("Relu", ["bn"], ["relu"], name="relu"),
        helper.make_node("Conv", ["relu", "dw.w", "dw.b"], ["dw"], name="dw", pads=[1, 1, 1, 1], group=c),
        helper.make_node("Clip", ["dw", "clip.min", "clip.max"], ["clip"], name="clip"),
        helper.make_node("Conv", ["clip", "pw.w"], ["pw"], name="pw"),
        helper.make_node("Add", ["pw", "relu"], ["add"], name="add"),
        helper.make_node("MaxPool", ["add"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def calibrated_mobilenet_v2(folder, calib_views: int = 32):
    """torchvision MobileNetV2 exported to FOLDER/mbv2.onnx, and its edgeq calibration on real photo views."""
    from edgeq.api.export import export_module
    from edgeq.data import ArrayData, input_specs
    from edgeq.io.onnx_model import load_model
    from edgeq.pipeline import Pipeline
    from edgeq.quantization.recipe import Recipe
    from models.mobilenet_v2 import build
    from models.photos import calib_views as photo_views

    module, example = build()
    float_path = folder / "mbv2.onnx"
    export_module(module, example, float_path, input_names=["input"], output_names=["logits"])
    model = load_model(float_path)
    data = ArrayData({"input": photo_views(calib_views)}, input_specs(model), "views")
    return float_path, Pipeline(Recipe(), progress=False).calibrate(model, data)


@pytest.fixture
def convnet_path(tmp_path):
    path = tmp_path / "convnet.onnx"
    onnx.save(make_convnet(), path)
    return path


@pytest.fixture
def convnet_calib(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "calib.npz"
    np.savez(path, input=rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32))
    return path


# The validator tests' sound model (tests/tflite_validate_cases.py) and what each reference runtime computes on it.
@pytest.fixture(scope="module")
def sound_model() -> bytes:
    from tflite_validate_cases import sound_graph

    from edgeq.tflite_format.flatbuffer import write

    return write(sound_graph())


@pytest.fixture(scope="module")
def tflm_expected(sound_model) -> list[np.ndarray]:
    from tflite_validate_cases import SAMPLE

    from edgeq.targets.tflm.interpreter import run_tflm

    return run_tflm(sound_model, [SAMPLE])


@pytest.fixture(scope="module")
def litert_expected(sound_model) -> list[np.ndarray]:
    from tflite_validate_cases import SAMPLE

    from edgeq.targets.tflite.interpreters import run_litert

    return run_litert(sound_model, [SAMPLE], kernels="reference")
