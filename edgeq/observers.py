"""Streaming tensor statistics and the range each calibration method picks from them.

One ``TensorObserver`` per tensor keeps the running min/max and a histogram anchored at 0: bin i on the
positive side counts values in [i*w, (i+1)*w), bin i on the negative side counts -x in that interval, with
``BINS`` bins a side. When a batch exceeds the covered range [-BINS*w, BINS*w), w doubles by summing adjacent
bin pairs, which is exact (no value changes bin side and no re-binning error accumulates), as often as needed.
Memory is O(BINS) whatever the number of samples.

Ranges (all widened to contain 0, since 0 must be exactly representable):
* minmax:     [min, max].
* percentile: [q(1-p), q(p)] of the histogram, p = 99.99% by default; each tail taken on its own side.
* entropy:    the threshold T that minimizes KL(P || Q) between the |x| histogram clipped at T and its
              quantization to the levels available on that side (TensorRT's method); [max(min, -T), min(max, T)].
* mse:        the range [a*lo, a*hi] (lo/hi the observed extremes, a on a grid in (0, 1]) minimizing the expected
              squared error of affine quantization to 2^bits levels, rounding and clipping included, computed from
              bin centers and counts with the zero point rounded exactly as the quantizer rounds it.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 2048


class TensorObserver:
    """Running statistics of one tensor: min, max and (optionally) a zero-anchored histogram."""

    def __init__(self, histogram: bool = True, bins: int = BINS):
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.histogram = histogram
        self.bins = bins
        self.width = 0.0
        self.pos = np.zeros(bins, np.int64)
        self.neg = np.zeros(bins, np.int64)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).reshape(-1)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += x.size
        if not self.histogram:
            return
        extent = max(-lo, hi)
        if extent == 0.0:
            self.pos[0] += x.size
            return
        if self.width == 0.0:
            # Start with the first batch's extent so its values fill the histogram.
            self.width = extent * (1 + 1e-6) / self.bins
        while extent >= self.width * self.bins:
            self._double_width()
        idx = np.minimum((np.abs(x) * np.float32(1.0 / self.width)).astype(np.int64), self.bins - 1)
        negative = x < 0
        self.pos += np.bincount(idx[~negative], minlength=self.bins)
        self.neg += np.bincount(idx[negative], minlength=self.bins)

    def _double_width(self) -> None:
        half = self.bins // 2
        for side in (self.pos, self.neg):
            merged = side.reshape(half, 2).sum(axis=1)
            side[:half] = merged
            side[half:] = 0
        self.width *= 2.0

    # ---- ranges -------------------------------------------------------------------------------------------
    def range(self, method: str, *, num_bits: int = 8, percentile: float = 99.99) -> tuple[float, float]:
        if self.count == 0:
            raise ValueError("observer has seen no data")
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        if method == "minmax" or hi - lo == 0.0:
            return _nonempty(lo, hi)
        if not self.histogram:
            raise ValueError(f"method {method!r} needs a histogram; this observer only tracks min/max")
        if method == "percentile":
            result = self._percentile_range(percentile)
        elif method == "entropy":
            threshold = self._entropy_threshold(num_bits)
            result = (max(lo, -threshold), min(hi, threshold))
        elif method == "mse":
            result = self._mse_range(lo, hi, num_bits)
        else:
            raise ValueError(f"unknown calibration method {method!r}")
        return _nonempty(min(result[0], 0.0), max(result[1], 0.0))

    def _signed_histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts and bin centers from the most negative bin to the most positive one."""
        counts = np.concatenate([self.neg[::-1], self.pos])
        centers = (np.arange(-self.bins, self.bins, dtype=np.float64) + 0.5) * self.width
        return counts, centers

    def _percentile_range(self, percentile: float) -> tuple[float, float]:
        counts, _ = self._signed_histogram()
        cdf = np.cumsum(counts)
        total = cdf[-1]
        tail = total * (100.0 - percentile) / 100.0
        lo_bin = int(np.searchsorted(cdf, tail, side="right"))
        hi_bin = int(np.searchsorted(cdf, total - tail, side="left"))
        lo = (lo_bin - self.bins) * self.width
        hi = (hi_bin - self.bins + 1) * self.width
        return max(lo, self.min), min(hi, self.max)

    def _entropy_threshold(self, num_bits: int) -> float:
        """TensorRT's KL-divergence calibration on the |x| histogram.

        The zero bin is set to its neighbour's count first (as NVIDIA's pytorch-quantization does): after a
        ReLU it holds a spike of exact zeros that no threshold represents any worse, and left in place it
        dominates the divergence and drives the threshold far too low. A one-sided tensor (min >= 0) is
        quantized to 2^bits levels, a signed one to 2^(bits-1) per side.
        """
        hist = (self.pos + self.neg).astype(np.float64)
        if hist.size > 1:
            hist[0] = hist[1]
        levels = 2**num_bits if self.min >= 0 else 2 ** (num_bits - 1)
        last = int(np.max(np.flatnonzero(hist))) + 1
        if last <= levels:
            return last * self.width
        best_kl, best_t = math.inf, last
        for t in range(levels, last + 1, max(1, (last - levels) // 256)):
            reference = hist[:t].copy()
            reference[t - 1] += hist[t:].sum()
            # Quantize the first t bins into LEVELS groups, spreading each group's mass over its non-empty bins.
            edges = np.linspace(0, t, levels + 1).astype(np.int64)[:-1]
            occupied = hist[:t] > 0
            group_sum = np.add.reduceat(hist[:t], edges)
            group_nonzero = np.add.reduceat(occupied.astype(np.float64), edges)
            per_bin = np.divide(group_sum, group_nonzero, out=np.zeros(levels), where=group_nonzero > 0)
            group_of_bin = np.repeat(np.arange(levels), np.diff(np.append(edges, t)))
            candidate = np.where(occupied, per_bin[group_of_bin], 0.0)
            p = reference / reference.sum()
            q_sum = candidate.sum()
            if q_sum == 0:
                continue
            q = candidate / q_sum
            mask = p > 0
            q_safe = np.where(q[mask] > 0, q[mask], 1e-12)
            kl = float(np.sum(p[mask] * np.log(p[mask] / q_safe)))
            if kl < best_kl:
                best_kl, best_t = kl, t
        return best_t * self.width

    def _mse_range(self, lo: float, hi: float, num_bits: int) -> tuple[float, float]:
        counts, centers = self._signed_histogram()
        keep = counts > 0
        counts, centers = counts[keep].astype(np.float64), centers[keep]
        levels = 2**num_bits - 1
        best_err, best = math.inf, (lo, hi)
        for ratio in np.linspace(0.2, 1.0, 81):
            a, b = lo * ratio, hi * ratio
            scale = (b - a) / levels
            zero_point = np.rint(-a / scale)
            q = np.clip(np.rint(centers / scale) + zero_point, 0, levels)
            err = float(np.sum(counts * ((q - zero_point) * scale - centers) ** 2))
            if err < best_err:
                best_err, best = err, (a, b)
        return best


def _nonempty(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo > 0.0:
        return float(lo), float(hi)
    return float(lo), float(lo) + 1e-8
