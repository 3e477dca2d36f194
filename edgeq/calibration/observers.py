"""Streaming tensor statistics and the range each calibration method picks from them.

One ``TensorObserver`` per tensor keeps the running min/max and a signed histogram anchored at 0 with ``2B``
bins (``B = BINS`` a side) of width ``w``: bin ``i`` counts the values x with ``floor(x / w) = i - B``, so bins
``B..2B-1`` cover [0, B*w) and bins ``0..B-1`` cover [-B*w, 0). The width is always a power of two, the
smallest one with ``max|x| < B*w``:

* a value's bin is ``floor(x * 2^-k) + B``, computed exactly in float32 (scaling by a power of two is exact);
* when a batch exceeds the covered range, w doubles by summing adjacent bin pairs, ``new[B/2 + m] =
  old[2m] + old[2m+1]``, which is exact because every edge of the coarse grid is an edge of the fine one.

Hence the histogram depends only on the values seen, not on how they were batched, and equals what one pass
at the final width would count. Memory is O(B) whatever the number of samples; an update costs a few
vectorized float32 passes plus ``np.bincount`` over chunks that stay in cache (about 2-3 ns per value).
NaN and Inf values are left out of every statistic and counted in ``nonfinite``.

Ranges (all contain 0, since 0 must be exactly representable, and have hi > lo; a tensor that showed no finite
value, being empty or all NaN/Inf, gets the all-zero tensor's range [0, 1e-8]). Asymmetric ranges feed the
affine grid ``scale = (hi - lo) / (2^b - 1)``, ``zero_point = round(-lo / scale)``; symmetric ones (-m, m)
the grid ``scale = m / (2^(b-1) - 1)``, zero point 0.

* minmax:     [min, max].
* percentile: [q(1 - p), q(p)] read off the cumulative histogram (outer bin edges, clipped to [min, max]);
              symmetric: m = q(p) of |x|.
* entropy:    TensorRT's KL-divergence search on the |x| histogram: the threshold T (a bin edge) minimizing
              KL(P || Q), P the histogram up to T with the mass beyond T added to its last bin, Q that
              histogram merged into as many groups as there are quantization levels (2^b for a one-sided
              tensor, 2^(b-1) for a signed one) and spread back over each group's non-empty bins. The range
              is [max(min, -T), min(max, T)]; symmetric: (-T, T).
* mse:        the range minimizing the expected squared error of quantizing the histogram (values at bin
              centers, weighted by counts), rounding and clipping included, on exactly the grid above with
              the zero point rounded: first a shared shrink factor a*[min, max] over a geometric grid of a
              in [1/128, 1], then the two ends refined one at a time on the same grid.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 4096
METHODS = ("minmax", "percentile", "entropy", "mse")
_CHUNK = 1 << 16  # values per bincount call: the index buffers stay in cache
_MIN_WIDTH_EXPONENT = -120  # keeps 1/width a finite float32
_TINY = 1e-8  # the range of an all-zero tensor: any positive scale represents it exactly
_SHRINK = np.geomspace(1.0 / 128.0, 1.0, 169)  # mse candidates: 2.9% steps from 1/128 to 1


class TensorObserver:
    """Running statistics of one tensor: min, max, count and (optionally) the zero-anchored histogram."""

    def __init__(self, histogram: bool = True, bins: int = BINS, keep_rows: int = 0):
        if bins < 2 or bins & (bins - 1):
            raise ValueError("bins must be a power of two")
        self.histogram = histogram
        # the first KEEP_ROWS rows (vectors along the last axis) as seen: what a layer reading the tensor
        # multiplies, for edgeq.quantization.range_choice
        self.keep_rows = keep_rows
        self.rows: list[np.ndarray] = []
        self.bins = bins
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0
        self.width = 0.0  # 0 until a nonzero value arrives
        self.counts = np.zeros(2 * bins if histogram else 0, np.int64)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        kept = sum(len(r) for r in self.rows)
        if kept < self.keep_rows and x.ndim:
            self.rows.append(np.array(x.reshape(-1, x.shape[-1])[: self.keep_rows - kept], np.float32))
        x = (x if x.dtype == np.float32 else x.astype(np.float32)).reshape(-1)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):  # min/max propagate NaN and show Inf
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += x.size
        if not self.histogram:
            return
        extent = max(-lo, hi)
        if extent == 0.0:
            self.counts[self.bins] += x.size
            return
        self._cover(extent)
        inverse_width = np.float32(1.0 / self.width)  # exact: the width is a power of two
        offset = np.float32(self.bins)
        scratch = np.empty(min(x.size, _CHUNK), np.float32)
        for start in range(0, x.size, _CHUNK):
            part = x[start : start + _CHUNK]
            index = scratch[: part.size]
            np.multiply(part, inverse_width, out=index)
            np.floor(index, out=index)
            index += offset
            self.counts += np.bincount(index.astype(np.intp), minlength=2 * self.bins)

    def _cover(self, extent: float) -> None:
        """Grow the width to the smallest power of two with extent < bins * width."""
        exponent = max(math.frexp(extent)[1] - (self.bins.bit_length() - 1), _MIN_WIDTH_EXPONENT)
        needed = math.ldexp(1.0, exponent)
        if self.width == 0.0:
            self.width = needed
        while self.width < needed:
            merged = self.counts.reshape(self.bins, 2).sum(axis=1)
            self.counts[:] = 0
            self.counts[self.bins // 2 : self.bins // 2 + self.bins] = merged
            self.width *= 2.0

    # ---- ranges -------------------------------------------------------------------------------------------
    def range(
        self, method: str, *, num_bits: int = 8, symmetric: bool = False, percentile: float = 99.99
    ) -> tuple[float, float]:
        """The calibrated range [lo, hi] of METHOD (see the module docstring); lo <= 0 <= hi, hi > lo."""
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r} (one of {', '.join(METHODS)})")
        if self.count == 0:  # an empty tensor, or only NaN/Inf: nothing finite to represent
            return 0.0, _TINY
        if method != "minmax" and not self.histogram:
            raise ValueError(f"method {method!r} needs a histogram; this observer only tracks min/max")
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        if symmetric:
            m = max(-lo, hi)
            if m > 0.0 and method == "percentile":
                m = self._abs_percentile(percentile)
            elif m > 0.0 and method == "entropy":
                m = self._entropy_threshold(2 ** (num_bits - 1))
            elif m > 0.0 and method == "mse":
                m = self._mse_symmetric(m, num_bits)
            m = float(m) if m > 0.0 else _TINY
            return -m, m
        if hi - lo == 0.0:
            return 0.0, _TINY
        if method == "percentile":
            lo, hi = self._percentile_range(percentile)
        elif method == "entropy":
            one_sided = self.min >= 0.0 or self.max <= 0.0
            threshold = self._entropy_threshold(2**num_bits if one_sided else 2 ** (num_bits - 1))
            lo, hi = max(lo, -threshold), min(hi, threshold)
        elif method == "mse":
            lo, hi = self._mse_range(lo, hi, num_bits)
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        return (lo, hi) if hi > lo else (0.0, _TINY)

    def _centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts and centers of the non-empty bins, as float64."""
        nonzero = np.flatnonzero(self.counts)
        return self.counts[nonzero].astype(np.float64), (nonzero - self.bins + 0.5) * self.width

    def _abs_histogram(self) -> np.ndarray:
        """Counts of |x|: bin j covers [j*w, (j+1)*w) on the positive side and (j*w, (j+1)*w] on the other."""
        return self.counts[self.bins :] + self.counts[self.bins - 1 :: -1]

    def _percentile_range(self, percentile: float) -> tuple[float, float]:
        cdf = np.cumsum(self.counts)
        tail = cdf[-1] * (100.0 - percentile) / 100.0
        lo_bin = int(np.searchsorted(cdf, tail, side="right"))
        hi_bin = int(np.searchsorted(cdf, cdf[-1] - tail, side="left"))
        lo = (lo_bin - self.bins) * self.width
        hi = (hi_bin - self.bins + 1) * self.width
        return max(lo, self.min), min(hi, self.max)

    def _abs_percentile(self, percentile: float) -> float:
        cdf = np.cumsum(self._abs_histogram())
        top = int(np.searchsorted(cdf, cdf[-1] * percentile / 100.0, side="left"))
        return min((top + 1) * self.width, max(-self.min, self.max))

    def _entropy_threshold(self, levels: int) -> float:
        """TensorRT's KL-divergence threshold on the |x| histogram, quantized to LEVELS levels.

        The zero bin is set to its neighbour's count first (as NVIDIA's pytorch-quantization does): after a
        ReLU it holds a spike of exact zeros that every threshold represents exactly, and left in place it
        dominates the divergence and drives the threshold far too low.
        """
        hist = self._abs_histogram().astype(np.float64)
        hist[0] = hist[1]
        occupied_bins = np.flatnonzero(hist)
        if occupied_bins.size == 0:  # every value lies in the first bin
            return self.width
        last = int(occupied_bins[-1]) + 1
        if last <= levels:
            return last * self.width
        best_kl, best_t = math.inf, last
        for t in range(levels, last + 1, max(1, (last - levels) // 256)):
            reference = hist[:t].copy()
            reference[t - 1] += hist[t:].sum()
            # Merge the first t bins into LEVELS groups, spreading each group's mass over its non-empty bins.
            edges = np.linspace(0, t, levels + 1).astype(np.int64)[:-1]
            occupied = hist[:t] > 0
            group_sum = np.add.reduceat(hist[:t], edges)
            group_occupied = np.add.reduceat(occupied.astype(np.float64), edges)
            per_bin = np.divide(group_sum, group_occupied, out=np.zeros(levels), where=group_occupied > 0)
            candidate = np.where(occupied, np.repeat(per_bin, np.diff(np.append(edges, t))), 0.0)
            if candidate.sum() == 0.0:
                continue
            p = reference / reference.sum()
            q = candidate / candidate.sum()
            mask = p > 0
            kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
            if kl < best_kl:
                best_kl, best_t = kl, t
        return best_t * self.width

    def _mse_range(self, lo: float, hi: float, num_bits: int) -> tuple[float, float]:
        counts, centers = self._centers()
        levels = 2**num_bits - 1

        def errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            scale = ((b - a) / levels)[:, None]
            zero_point = np.rint(-a[:, None] / scale)
            q = np.clip(np.rint(centers / scale) + zero_point, 0, levels)
            return ((q - zero_point) * scale - centers) ** 2 @ counts

        k = int(np.argmin(errors(lo * _SHRINK, hi * _SHRINK)))
        a, b = lo * _SHRINK[k], hi * _SHRINK[k]
        for _ in range(2):  # refine each end with the other fixed
            if lo < 0.0:
                a = lo * _SHRINK[int(np.argmin(errors(lo * _SHRINK, np.full_like(_SHRINK, b))))]
            if hi > 0.0:
                b = hi * _SHRINK[int(np.argmin(errors(np.full_like(_SHRINK, a), hi * _SHRINK)))]
        return a, b

    def _mse_symmetric(self, m: float, num_bits: int) -> float:
        counts, centers = self._centers()
        qmax = 2 ** (num_bits - 1) - 1
        scale = (m * _SHRINK / qmax)[:, None]
        q = np.clip(np.rint(centers / scale), -qmax - 1, qmax)
        return float(m * _SHRINK[int(np.argmin((q * scale - centers) ** 2 @ counts))])
