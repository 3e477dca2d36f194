"""Output-aware range search (passes.range_search): the search model, the rebuilt encodings, and the effect on
real models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_convnet
from test_cli import DIGITS, DIGITS_CALIB, edgeq

from edgeq.data import ArrayData, input_specs, load_npz
from edgeq.io.onnx_model import clone_model, load_model
from edgeq.io.session import session as ort_session
from edgeq.measure.metrics import sqnr_db
from edgeq.passes import range_search
from edgeq.passes.range_search import _factor_inputs, searchable_groups
from edgeq.pipeline import Pipeline
from edgeq.quantization.plan import Exclusions, assign_encodings, plan_quantization
from edgeq.quantization.qparams import ACTIVATION_TYPES
from edgeq.quantization.recipe import Recipe

INT8 = ACTIVATION_TYPES["int8"]


@pytest.fixture(scope="module")
def convnet(tmp_path_factory):
    path = tmp_path_factory.mktemp("convnet") / "convnet.onnx"
    onnx.save(make_convnet(), path)
    model = load_model(path)
    x = np.random.default_rng(1).normal(0, 1, (40, 3, 8, 8)).astype(np.float32)
    data = ArrayData({"input": x}, input_specs(model), "random")
    return Pipeline(Recipe(), progress=False).calibrate(model, data), x


def _plan_and_ranges(calibration):
    plan = plan_quantization(clone_model(calibration.model).graph, Exclusions([]))
    ranges = {name: calibration.observers[name].range("percentile") for name in plan.calibration_tensors()}
    return plan, ranges


def test_groups_share_one_factor_and_fixed_encodings_are_left_out(convnet):
    calibration, _ = convnet
    plan, _ = _plan_and_ranges(calibration)
    groups = searchable_groups(plan)
    assert (
        "probs" not in groups and "logits" in groups
    )  # Softmax's output has a fixed encoding, its input not
    assert groups["pool"] == groups["add"]  # MaxPool shares its input's encoding
    assert len(set(groups.values())) < len(groups)


def test_search_model_at_factor_one_is_the_qdq_model(convnet):
    calibration, x = convnet
    qdq, _ = Pipeline(Recipe()).quantize(calibration)
    plan, _ = _plan_and_ranges(calibration)
    search_model, groups = _factor_inputs(qdq, searchable_groups(plan))
    assert len(groups) == len(set(searchable_groups(plan).values()))
    expected = ort_session(qdq).run(
        None, {"input": x}
    )
    session = ort_session(search_model)
    ones = {f"range_search.factor.{i}": np.array(1.0, np.float32) for i in range(len(groups))}
    np.testing.assert_array_equal(session.run(None, {"input": x, **ones})[0], expected[0])
    halved = session.run(None, {"input": x, **ones, "range_search.factor.0": np.array(0.5, np.float32)})[0]
    assert not np.array_equal(halved, expected[0])


def test_range_factors_scale_the_group_and_keep_its_zero_point(convnet):
    calibration, _ = convnet
    plan, ranges = _plan_and_ranges(calibration)
    group = plan.group_of("add")
    before = assign_encodings(plan, ranges, INT8)
    after = assign_encodings(plan, ranges, INT8, {group: 0.5})
    for name in before:
        if plan.group_of(name) == group:
            assert after[name].scale == pytest.approx(before[name].scale * 0.5, rel=1e-6)
            assert after[name].zero_point == before[name].zero_point
        else:
            assert after[name] == before[name]


def test_search_never_raises_the_loss_and_the_model_is_rebuilt(convnet):
    calibration, _ = convnet
    qdq, report = Pipeline(Recipe(passes=["range-search"])).quantize(calibration)
    search = report["stages"]["range-search"]
    before, after = search["output_loss_on_search_samples"]
    assert after <= before
    assert search["samples"] == 32 and search["groups"] == len(
        set(searchable_groups(_plan_and_ranges(calibration)[0]).values())
    )
    # rebuilt, not patched: no factor inputs, and every bias scale is s_in * s_w of the chosen input encoding
    assert [v.name for v in qdq.graph.inputs] == ["input"]
    encodings = report["encodings"]
    for group, factor in search["clipped_groups"].items():
        assert 0 < factor < 1 and encodings[group]["scale"] > 0


def test_digits_convert_to_tflite_with_range_search(tmp_path):
    """The rebuilt encodings still satisfy TFLite's shared-encoding rules (the lowering checks them) and the
    .tflite agrees with the integer reference."""
    result = edgeq(
        "convert",
        DIGITS,
        "-o",
        tmp_path,
        "--calib",
        DIGITS_CALIB,
        "--passes",
        "range-search",
        "--target",
        "tflite",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "digits_cnn.tflite").exists()


@pytest.mark.slow
def test_mobilenet_v2_residual_stream_is_clipped_and_logits_improve(tmp_path, monkeypatch):
    """MobileNetV2 per-channel W8A8 on held-out photo views: clipping the late residual stream (a shorter search
    here: 8 samples, factors 0.5 and 0.25) raises the logits SQNR."""
    from conftest import calibrated_mobilenet_v2

    from models.photos import eval_views

    monkeypatch.setattr(range_search, "FACTORS", (0.5, 0.25))
    monkeypatch.setattr(range_search, "SAMPLES", 8)
    _, calibration = calibrated_mobilenet_v2(tmp_path, calib_views=32)
    views = eval_views(48, seed=7)
    reference = _run(calibration.model, views)
    default, _ = Pipeline(Recipe()).quantize(calibration)
    searched, report = Pipeline(Recipe(passes=["range-search"])).quantize(calibration)
    clipped = report["stages"]["range-search"]["clipped_groups"]
    assert any("features.1" in group and "Add" in group for group in clipped), clipped
    # measured: 15.6 -> 17.0 dB; the late residual stream (features.16 Add) clipped to a quarter of its range
    assert sqnr_db(reference, _run(searched, views)) > sqnr_db(reference, _run(default, views)) + 0.8


def test_digits_held_out_logits_do_not_get_worse():
    model = load_model(DIGITS)
    data = load_npz(DIGITS_CALIB, input_specs(model))
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, data)
    x = np.load(DIGITS.parent / "digits_test.npz")["input"]
    reference = _run(calibration.model, x)
    default, _ = Pipeline(Recipe()).quantize(calibration)
    searched, _ = Pipeline(Recipe(passes=["range-search"])).quantize(calibration)
    assert sqnr_db(reference, _run(searched, x)) > sqnr_db(reference, _run(default, x)) - 0.3


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort_session(model)
    return np.concatenate([session.run(None, {"input": x[i : i + 16]})[0] for i in range(0, len(x), 16)])
