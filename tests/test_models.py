"""The shipped model zoo: the digits demo model and data, MobileNetV2 with torchvision's weights."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import REPO, calibrated_mobilenet_v2

from edgeq.io.session import session as ort_session
from edgeq.measure.metrics import accuracy

MODELS = REPO / "models"


def test_digits_model_reaches_its_recorded_accuracy():
    info = json.loads((MODELS / "digits_cnn.json").read_text())
    test = np.load(MODELS / "digits_test.npz")
    assert test["input"].dtype == np.float32 and test["input"].shape[1:] == (1, 8, 8)
    assert test["label"].dtype == np.int64 and len(test["label"]) == info["test_samples"] == 450
    session = ort_session(MODELS / "digits_cnn.onnx")
    acc = accuracy(session.run(None, {"input": test["input"]})[0], test["label"])
    assert acc == pytest.approx(info["float_test_accuracy"], abs=0.005)
    assert acc >= 0.97


def test_digits_files_have_the_documented_layout():
    calib = np.load(MODELS / "digits_calib.npz")
    assert list(calib.keys()) == ["input"] and calib["input"].shape == (256, 1, 8, 8)
    model = onnx.load(MODELS / "digits_cnn.onnx")
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 4  # kept for edgeq's folding pass and its statistics
    assert {"Add", "GlobalAveragePool", "Gemm", "Clip"} <= set(ops)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


@pytest.mark.slow
def test_mobilenet_v2_weights_load_and_export_matches_torch(tmp_path):
    import sys

    import torch

    sys.path.insert(0, str(REPO))
    from edgeq.api.export import export_module
    from models.mobilenet_v2 import build
    from models.photos import eval_views

    module, example = build()
    views = eval_views(8)
    with torch.no_grad():
        expected = module(torch.from_numpy(views)).numpy()
    # real photos are recognized: views 0 and 2 are of astronaut and chelsea (a tabby cat)
    assert expected[2].argmax() in range(281, 286)
    result = export_module(
        module, example, tmp_path / "mbv2.onnx", input_names=["input"], output_names=["logits"]
    )
    assert result["opset"] == 17
    got = ort_session(tmp_path / "mbv2.onnx").run(
        None, {"input": views}
    )[0]
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-3)


@pytest.mark.slow
def test_mobilenet_v2_end_to_end_beats_minmax_and_fuses_every_conv(tmp_path):
    """The default recipe on real photo views: every conv runs as an integer kernel and the logits keep
    their SQNR (BENCHMARKS.md has the full comparison; these bounds leave room for run-to-run noise)."""
    from edgeq.io.onnx_model import save_model
    from edgeq.measure.metrics import sqnr_db
    from edgeq.pipeline import Pipeline
    from edgeq.quantization.recipe import Recipe
    from edgeq.targets.onnxruntime.fusion import fusion_report
    from models.photos import eval_views

    float_path, calibration = calibrated_mobilenet_v2(tmp_path)
    views = eval_views(64, seed=7)
    session = ort_session(float_path)
    ref = session.run(None, {"input": views})[0]
    sqnr = {}
    for name, recipe in {
        "default": Recipe(),
        "minmax": Recipe(calib_method="minmax", weight_range="minmax", weight_rounding="nearest"),
    }.items():
        qdq, report = Pipeline(recipe).quantize(calibration, "uint8")
        path = save_model(qdq, tmp_path / f"{name}.onnx")
        out = ort_session(path).run(None, {"input": views})[
            0
        ]
        sqnr[name] = sqnr_db(ref, out)
        if name == "default":
            fusion = fusion_report(path)
            assert fusion.convs_fused == fusion.convs_total == 52 and report["float_nodes"] == {}
    assert sqnr["default"] > 13.0 and sqnr["default"] > sqnr["minmax"] + 2.0, sqnr
