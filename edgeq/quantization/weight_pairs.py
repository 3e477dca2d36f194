"""Weights whose pairs of products cannot overflow an int16: |q_i| + |q_j| <= L for any two weights of a channel.

ONNX Runtime's u8 x s8 kernels on x86 without VNNI multiply with VPMADDUBSW, which adds two adjacent products
a_0 w_0 + a_1 w_1 into a saturating int16 (a in [0, 255]): exact for every input when |w_0| + |w_1| <= 128
(255 x 128 = 32640 <= 32767). Which weights the kernel pairs depends on how it packs them, so the bound holds for
every pair of a channel: the sum of its two largest magnitudes is at most L = 128. Most channels have two
weights near their maximum and end up within +-64 (7 bits, like ONNX Runtime's ``reduce_range``); a channel with
one outlier keeps nearly 8 bits for it.

* ``pair_safe_scales``: the channel's scale s raised by the factor (r_1 + r_2) / (L - 1) where the two largest
  ratios |w| / s (clipped to qmax) add up to more than L - 1; rounding each adds at most 1/2, so the integers then
  add up to at most L.
* ``limit_pairs``: the integer guarantee after anything that rounds (keeping channel sums, AdaRound, dyadic
  scales): while a channel's two largest magnitudes exceed L, its largest moves one step toward zero.
"""

from __future__ import annotations

import numpy as np

PAIR_LIMIT = 128  # 255 * 128 = 32640: two u8 x s8 products fit a signed 16-bit sum


def _rows(values: np.ndarray, axis: int | None) -> np.ndarray:
    """One row per channel along AXIS (one row for the whole tensor when AXIS is None)."""
    return np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1) if axis is not None else values.reshape(1, -1)


def pair_sums(values: np.ndarray, axis: int | None) -> np.ndarray:
    """Per channel: the sum of its two largest magnitudes (its only one, if it has one)."""
    rows = np.abs(_rows(values, axis)).astype(np.float64)
    if rows.shape[1] < 2:
        return rows.max(axis=1)
    return np.partition(rows, rows.shape[1] - 2, axis=1)[:, -2:].sum(axis=1)


def pair_safe_scales(w: np.ndarray, scales: np.ndarray, axis: int, qmax: int, limit: int) -> np.ndarray:
    """SCALES (one per channel on AXIS, or one for the tensor) raised where a channel's pairs could exceed LIMIT."""
    shape = [1] * w.ndim
    if scales.size > 1:
        shape[axis] = -1
    ratios = np.minimum(np.abs(w / scales.reshape(shape)), qmax)  # clipped weights round to qmax
    factor = pair_sums(ratios, axis) / (limit - 1)  # per channel: pairs never span two channels
    if scales.size == 1:
        factor = factor.max(keepdims=True)
    return np.where(factor > 1.0, scales * factor, scales).astype(np.float32)


def limit_pairs(q: np.ndarray, axis: int | None, limit: int) -> np.ndarray:
    rows = _rows(q, axis).astype(np.int32)  # a copy: the caller's array is left as it is
    while (over := pair_sums(rows, 0 if axis is not None else None) > limit).any():
        largest = np.abs(rows).argmax(axis=1)
        picked = np.flatnonzero(over)
        rows[picked, largest[picked]] -= np.sign(rows[picked, largest[picked]])
    shape = (q.shape[axis], *np.delete(q.shape, axis)) if axis is not None else q.shape
    restored = rows.reshape(shape)
    return (np.moveaxis(restored, 0, axis) if axis is not None else restored).astype(q.dtype)
