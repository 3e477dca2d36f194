"""Observers: exact histogram doubling, batching-independent statistics, each range method on known data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeq.calibration.observers import METHODS, TensorObserver

RNG = np.random.default_rng(0)


def _observe(x, **kwargs) -> TensorObserver:
    observer = TensorObserver(**kwargs)
    observer.update(np.asarray(x, np.float32))
    return observer


def _error(x, lo, hi, bits=8):
    """Mean squared error of x on the affine grid the quantizer builds from [lo, hi]."""
    levels = 2**bits - 1
    scale = (hi - lo) / levels
    zero_point = np.rint(-lo / scale)
    q = np.clip(np.rint(x / scale) + zero_point, 0, levels)
    return float(np.mean(((q - zero_point) * scale - x) ** 2))


def test_width_doubling_is_exact():
    x = RNG.standard_cauchy(50_000).astype(np.float32)  # heavy tails: many doublings
    streamed = TensorObserver(bins=64)
    chunks = np.array_split(x[np.argsort(np.abs(x))], 37)  # each chunk reaches further out
    streamed.update(chunks[0])
    first_width = streamed.width
    for chunk in chunks[1:]:
        streamed.update(chunk)
    whole = _observe(x, bins=64)
    assert streamed.width == whole.width >= 2**10 * first_width
    np.testing.assert_array_equal(streamed.counts, whole.counts)
    assert streamed.counts.sum() == x.size
    # and every count sits in the bin its value belongs to at the final width
    expected = np.bincount((np.floor(x / whole.width) + 64).astype(int), minlength=128)
    np.testing.assert_array_equal(whole.counts, expected)


def test_width_is_the_smallest_covering_power_of_two():
    observer = _observe([0.0, -3.0, 0.5])
    assert observer.width == 2.0**-10  # 3 < 4096 * 2^-10 = 4, and 2048 * 2^-10 = 2 would not cover it
    assert observer.counts[observer.bins] == 1  # 0.0 lands in the first positive bin


def test_statistics_do_not_depend_on_batching():
    x = (RNG.normal(0, 1, 60_000) * RNG.choice([0.1, 1.0, 20.0], 60_000)).astype(np.float32)
    whole = _observe(x)
    batched = TensorObserver()
    for chunk in np.array_split(x, 23):
        batched.update(chunk)
    for method in METHODS:
        assert batched.range(method) == whole.range(method), method
        assert batched.range(method, symmetric=True) == whole.range(method, symmetric=True), method


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_ranges_contain_zero_and_are_nonempty(method, symmetric):
    for data in [RNG.uniform(2, 3, 1000), RNG.uniform(-3, -2, 1000), np.zeros(100), [1e-30], [-7.0]]:
        lo, hi = _observe(data).range(method, symmetric=symmetric)
        assert lo <= 0.0 <= hi and hi > lo, data
        if symmetric:
            assert lo == -hi


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e6, 1e6, width=32)),
    st.sampled_from(METHODS),
    st.booleans(),
)
def test_any_data_gives_a_valid_range(x, method, symmetric):
    observer = _observe(x)
    lo, hi = observer.range(method, symmetric=symmetric)
    assert lo <= 0.0 <= hi and hi > lo
    if not symmetric:  # never beyond what was seen (beyond 0)
        assert lo >= min(observer.min, 0.0) and hi <= max(observer.max, 0.0) + 1e-8


def test_uniform_data_keeps_the_full_range():
    observer = TensorObserver()
    for _ in range(5):
        observer.update(RNG.uniform(-1, 3, 100_000).astype(np.float32))
    for method in ("minmax", "percentile", "mse"):
        lo, hi = observer.range(method)
        assert lo == pytest.approx(-1, abs=0.02) and hi == pytest.approx(3, abs=0.06), method


def test_percentile_matches_numpy_quantiles():
    x = RNG.normal(0.5, 1, 400_000).astype(np.float32)
    observer = _observe(x)
    lo, hi = observer.range("percentile", percentile=99.9)
    assert lo == pytest.approx(np.quantile(x, 0.001), abs=2 * observer.width)
    assert hi == pytest.approx(np.quantile(x, 0.999), abs=2 * observer.width)
    m = observer.range("percentile", percentile=99.9, symmetric=True)[1]
    assert m == pytest.approx(np.quantile(np.abs(x), 0.999), abs=2 * observer.width)
    assert observer.range("percentile", percentile=100.0) == observer.range("minmax")


def test_gaussian_outliers_are_clipped_by_percentile_entropy_and_mse():
    x = RNG.normal(0, 1, 1_000_000).astype(np.float32)
    x[:3] = [40.0, -35.0, 38.0]
    observer = _observe(x)
    assert observer.range("minmax") == (-35.0, 40.0)
    for method in ("percentile", "entropy"):
        lo, hi = observer.range(method)
        assert -12 < lo < -2.5 and 2.5 < hi < 12, (method, lo, hi)
    # mse trades the outliers' clipping error against finer steps for everything else: it clips them
    # partly, and no other method's range has a lower squared error.
    lo, hi = observer.range("mse")
    assert -12 < lo < -2.5 and 2.5 < hi < 30
    for method in METHODS:
        assert _error(x, lo, hi) <= 1.01 * _error(x, *observer.range(method)), method
    assert _error(x, lo, hi) < 0.4 * _error(x, *observer.range("minmax"))


def test_relu_outputs_get_one_sided_ranges():
    x = np.maximum(RNG.normal(0, 1, 1_000_000), 0).astype(np.float32)
    x[:10] = 80.0
    observer = _observe(x)
    for method in ("percentile", "entropy"):
        lo, hi = observer.range(method)
        assert lo == 0.0 and 2.5 < hi < 20.0, (method, hi)
    # Ten outliers cost more squared error clipped than kept: mse keeps them, as it should.
    assert observer.range("mse") == (0.0, pytest.approx(80.0, rel=0.1))


@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_finds_the_best_range_of_a_fine_brute_force_search(symmetric):
    x = RNG.laplace(0.3, 1, 50_000).astype(np.float32)
    observer = _observe(x)
    lo, hi = observer.range("mse", symmetric=symmetric)
    grid = np.linspace(0.1, 1, 46)
    if symmetric:

        def error(m):
            scale = m / 127
            return float(np.mean((np.clip(np.rint(x / scale), -128, 127) * scale - x) ** 2))

        assert lo == -hi
        brute = min(error(a * np.abs(x).max()) for a in np.linspace(0.05, 1, 400))
        chosen = error(hi)
    else:
        brute = min(_error(x, a * x.min(), b * x.max()) for a in grid for b in grid)
        chosen = _error(x, lo, hi)
    assert chosen <= 1.02 * brute


def test_non_finite_values_are_left_out_and_counted():
    observer = _observe([np.nan, np.inf, -1.0, 2.0, -np.inf])
    assert (observer.min, observer.max, observer.count, observer.nonfinite) == (-1.0, 2.0, 2, 3)
    assert observer.range("percentile", percentile=100.0) == (-1.0, 2.0)


def test_minmax_only_observer_refuses_histogram_methods():
    observer = _observe(np.arange(10), histogram=False)
    assert observer.range("minmax") == (0.0, 9.0)
    with pytest.raises(ValueError, match="needs a histogram"):
        observer.range("mse")
    with pytest.raises(ValueError, match="unknown calibration method"):
        observer.range("kl")
