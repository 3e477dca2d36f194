"""Accuracy-aware mode (edgeq.mixed.accuracy_aware): weight reverts and activation tensor moves until a metric's
drop is met (or a clear "NOT met"), and its metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO

import edgeq.api as edgeq_api
from edgeq.cli import main
from edgeq.errors import DataError, RecipeError
from edgeq.io.session import session
from edgeq.measure.metrics import top1_agreement
from edgeq.mixed.accuracy_aware import metric_of, roc_auc

DIGITS = REPO / "models" / "digits_cnn.onnx"
DIGITS_CALIB = REPO / "models" / "digits_calib.npz"
DIGITS_TEST = REPO / "models" / "digits_test.npz"

# the logits' SQNR to fp32 in dB, capped at 60 (fp32's own): uniform int8 digits scores 33, so a max drop of 20
# (>= 40 dB) needs activation tensors wider than int8; all of them int16 reach 36, float 60
CAPPED_SQNR = """
import numpy as np

def score(reference, outputs, labels):
    r, o = np.asarray(reference[0], np.float64), np.asarray(outputs[0], np.float64)
    noise = np.sum((r - o) ** 2)
    return 60.0 if noise == 0 else float(min(60.0, 10 * np.log10(np.sum(r * r) / noise)))
"""


def _agreement(path, x: np.ndarray) -> float:
    reference = session(DIGITS).run(None, {"input": x})[0]
    return 100.0 * top1_agreement(reference, session(path).run(None, {"input": x})[0])


def test_reverts_until_the_drop_is_met_where_uniform_int4_misses_it(tmp_path):
    out = tmp_path / "aware.onnx"
    result = edgeq_api.quantize(
        DIGITS, DIGITS_CALIB, output=out, recipe={"weight_bits": 4}, activation_type="auto", eval_data=DIGITS_TEST,
        max_drop=0.5, metric="agreement", ray_address="serial",
    )  # fmt: skip
    found = result.report["mixed_precision"]["accuracy_aware"]
    x = np.load(DIGITS_TEST)["input"]
    assert found["steps"][0]["change"] == "base (int4)" and found["steps"][0]["drop"] > 0.5  # uniform int4 misses
    assert found["met"] and 1 <= found["reverted"] < 10
    assert result.report["recipe"]["layers"] == found["layers"]
    assert 100.0 - _agreement(out, x) <= 0.5  # measured again on the file written, all 450 test images
    drops = [s["drop"] for s in found["steps"]]
    assert drops[-1] == pytest.approx(found["final_drop"], abs=1e-3)


def test_metrics():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = labels + rng.normal(0, 1.0, 200)
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    assert roc_auc(labels, scores) == pytest.approx(np.mean([p > n for p, n in pairs]))
    logits = np.stack([-scores, scores], axis=1)
    assert metric_of("auc", labels)([logits], [logits], labels) == pytest.approx(100 * roc_auc(labels, scores))
    assert metric_of("agreement", None)([logits], [logits[:, ::-1]], None) == 0.0
    assert metric_of("top1", labels)([logits], [logits], labels) == pytest.approx(100 * np.mean((scores > 0) == labels))
    with pytest.raises(RecipeError, match="needs labels"):
        metric_of("top1", None)
    with pytest.raises(DataError, match="both classes"):
        roc_auc(np.ones(4), np.arange(4.0))
    with pytest.raises(RecipeError, match="class scores"):
        metric_of("agreement", None)([scores], [scores], None)


def test_a_metric_of_the_users_own(tmp_path, monkeypatch):
    (tmp_path / "my_metric.py").write_text("def score(reference, outputs, labels):\n    return 42.0\n")
    monkeypatch.chdir(tmp_path)
    assert metric_of("my_metric:score", None)([np.zeros(2)], [np.zeros(2)], None) == 42.0
    with pytest.raises(DataError, match="has no attribute"):
        metric_of("my_metric:missing", None)


def _capped_metric(folder, monkeypatch) -> str:
    (folder / "capped_sqnr.py").write_text(CAPPED_SQNR)
    monkeypatch.chdir(folder)
    return "capped_sqnr:score"


def test_activation_tensors_go_float_for_onnxruntime_where_weights_cannot_meet_the_drop(tmp_path, monkeypatch):
    metric = _capped_metric(tmp_path, monkeypatch)
    out = tmp_path / "aware.onnx"
    result = edgeq_api.quantize(
        DIGITS, DIGITS_CALIB, output=out, activation_type="auto", eval_data=DIGITS_TEST, max_drop=20.0,
        metric=metric, ray_address="serial",
    )  # fmt: skip
    found = result.report["mixed_precision"]["accuracy_aware"]
    tensors = found["tensors"]
    moved = len(tensors["moved"])
    assert found["steps"][0]["drop"] > 20 and found["met"] and tensors["precision"] == "float"
    assert 1 <= moved < len(tensors["tensors"]) and found["reverted"] == moved
    assert tensors["moved"] == [t["tensor"] for t in tensors["tensors"]][:moved]  # in the measured ranking's order
    # the bisection's ends: the mix with one tensor fewer was built and missed (the base, for one tensor)
    fewer = "base (int8)" if moved == 1 else f"{moved - 1} of {len(tensors['tensors'])} tensors float"
    assert next(s for s in found["steps"] if s["change"] == fewer)["drop"] > 20
    moved_nodes = {name for t in tensors["tensors"][:moved] for name in t["nodes"]}
    assert {name for name, p in found["layers"].items() if p == "float"} == moved_nodes
    assert set(result.report["float_nodes"]) >= moved_nodes
    x = np.load(DIGITS_TEST)["input"]
    ratio = _sqnr(session(DIGITS).run(None, {"input": x})[0], session(out).run(None, {"input": x})[0])
    assert min(ratio, 60.0) >= 40.0  # measured again on the file written


def _sqnr(reference: np.ndarray, output: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - output) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


@pytest.mark.parametrize(("max_drop", "met"), [(25.0, True), (20.0, False)])
def test_activation_tensors_go_int16_for_tflite_and_the_cli_says_when_the_drop_is_not_met(
    tmp_path, monkeypatch, max_drop, met
):
    metric = _capped_metric(tmp_path, monkeypatch)
    outdir = tmp_path / "out"
    result = CliRunner().invoke(main, [str(a) for a in (
        "convert", DIGITS, "--calib", DIGITS_CALIB, "--eval-data", DIGITS_TEST, "--target", "tflite",
        "--max-drop", max_drop, "--metric", metric, "--ray-address", "serial", "-o", outdir,
    )])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((outdir / "report.json").read_text())
    found = report["mixed_precision"]["accuracy_aware"]
    tensors = found["tensors"]
    assert tensors["precision"] == "int16" and found["met"] is met
    assert set(found["layers"].values()) == {"int16"}
    assert report["targets"]["tflite"]["verification"]["bit_exact"]  # the 16x8 mix runs bit-exact in LiteRT
    if met:
        assert 1 <= len(tensors["moved"]) < len(tensors["tensors"]) and found["final_drop"] <= max_drop
        assert "accuracy-aware: capped_sqnr:score drop" in result.output and " met with " in result.output
    else:  # every tensor int16 is as far as TFLite goes: the result says so and keeps the closest mix
        assert tensors["moved"] == [t["tensor"] for t in tensors["tensors"]] and found["final_drop"] > max_drop
        assert "NOT met" in result.output
        assert f"warning: the drop {found['final_drop']:.3g} is above 20 with every activation tensor int16 and " \
            "every weight int8" in result.output
