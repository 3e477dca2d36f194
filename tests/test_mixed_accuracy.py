"""Accuracy-aware mode (edgeq.mixed.accuracy_aware): reverts until a metric's drop is met, and its metrics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

import edgeq.api as edgeq_api
from edgeq.errors import DataError, RecipeError
from edgeq.io.session import session
from edgeq.measure.metrics import top1_agreement
from edgeq.mixed.accuracy_aware import metric_of, roc_auc

DIGITS = REPO / "models" / "digits_cnn.onnx"
DIGITS_CALIB = REPO / "models" / "digits_calib.npz"
DIGITS_TEST = REPO / "models" / "digits_test.npz"


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
