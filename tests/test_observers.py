"""Observers: exact histogram doubling, and each range method on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.observers import TensorObserver

RNG = np.random.default_rng(0)


def test_width_doubling_keeps_every_count_and_side():
    observer = TensorObserver(bins=64)
    observer.update(np.array([0.5, -0.25, 1.0], np.float32))
    width = observer.width
    observer.update(np.array([100.0, -3.0], np.float32))
    assert observer.width >= 100.0 / 64 and observer.width / width == 2 ** round(
        np.log2(observer.width / width)
    )
    assert observer.pos.sum() == 3 and observer.neg.sum() == 2
    assert observer.min == -3.0 and observer.max == 100.0


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_ranges_contain_zero_and_are_nonempty(method):
    for data in [RNG.uniform(2, 3, 1000), RNG.uniform(-3, -2, 1000), np.zeros(100)]:
        observer = TensorObserver()
        observer.update(data.astype(np.float32))
        lo, hi = observer.range(method)
        assert lo <= 0.0 <= hi and hi > lo


def test_uniform_data_keeps_the_full_range():
    observer = TensorObserver()
    for _ in range(5):
        observer.update(RNG.uniform(-1, 3, 100_000).astype(np.float32))
    for method in ("minmax", "percentile", "mse"):
        lo, hi = observer.range(method)
        assert lo == pytest.approx(-1, abs=0.02) and hi == pytest.approx(3, abs=0.06), method


def test_outliers_are_clipped_by_percentile_and_entropy():
    observer = TensorObserver()
    x = np.maximum(RNG.normal(0, 1, 1_000_000), 0).astype(np.float32)  # a ReLU output
    x[:10] = 80.0
    observer.update(x)
    assert observer.range("minmax") == (0.0, 80.0)
    for method in ("percentile", "entropy"):
        lo, hi = observer.range(method)
        assert lo == 0.0 and 2.5 < hi < 20.0, (method, hi)
    # Ten outliers cost more squared error clipped than kept: mse keeps them, as it should.
    assert observer.range("mse")[1] > 60.0


def test_mse_clips_a_heavy_tail_and_beats_minmax_in_squared_error():
    x = RNG.laplace(0, 1, 1_000_000).astype(np.float32)
    observer = TensorObserver()
    observer.update(x)

    def error(lo, hi):
        scale = (hi - lo) / 255
        zero_point = np.rint(-lo / scale)
        q = np.clip(np.rint(x / scale) + zero_point, 0, 255)
        return float(np.mean(((q - zero_point) * scale - x) ** 2))

    mse_range, minmax_range = observer.range("mse"), observer.range("minmax")
    assert mse_range[1] < 0.8 * minmax_range[1]
    assert error(*mse_range) < 0.7 * error(*minmax_range)


def test_minmax_only_observer_refuses_histogram_methods():
    observer = TensorObserver(histogram=False)
    observer.update(np.arange(10, dtype=np.float32))
    assert observer.range("minmax") == (0.0, 9.0)
    with pytest.raises(ValueError, match="needs a histogram"):
        observer.range("mse")


def test_streaming_equals_one_shot_percentile():
    x = RNG.normal(0, 1, 200_000).astype(np.float32)
    whole, parts = TensorObserver(), TensorObserver()
    whole.update(x)
    for chunk in np.array_split(np.sort(np.abs(x)) * np.sign(x[:1]), 7):  # growing range forces doubling
        parts.update(chunk)
    assert parts.count == whole.count
    lo, hi = whole.range("percentile")
    assert np.quantile(x, 0.9999) == pytest.approx(hi, rel=0.02)
    assert np.quantile(x, 0.0001) == pytest.approx(lo, rel=0.02)
