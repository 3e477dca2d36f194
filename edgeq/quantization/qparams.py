"""Quantization parameters: the affine integer grids edgeq uses, and how tensors are put on them.

A real value x is represented by an integer q with ``x = scale * (q - zero_point)``, q in [qmin, qmax].

* Activations (per tensor, asymmetric): from a calibrated range [lo, hi] widened to contain 0 (so that
  zero padding and ReLU are exact), ``scale = (hi - lo) / (qmax - qmin)`` and
  ``zero_point = round(qmin - lo / scale)``, clamped to [qmin, qmax]. int16 activations are symmetric
  (zero point 0), as TFLite's A16W8 scheme requires.
* Weights (per output channel or per tensor, symmetric, narrow range): ``scale_c = max|w_c| / (2^(b-1) - 1)``,
  ``q = clamp(round(w / scale_c), -(2^(b-1) - 1), 2^(b-1) - 1)``, zero point 0. The narrow range keeps
  -w exactly representable, as the TFLite converter does.
* Bias (int32, zero point 0): ``scale_c = float32(s_in * s_w[c])`` exactly, so that the integer bias adds
  straight into the int32 accumulator ``sum (x_q - zp_x) * w_q``. When a tiny weight scale would make
  ``|round(b_c / scale_c)|`` exceed ``BIAS_LIMIT`` (2^30, half of int32, leaving headroom for the
  accumulation), the weight scale of that channel is raised until the bias fits; the caller reports it.
* Fixed output encodings that TFLite requires: Softmax and Sigmoid 1/256 at the bottom of the range
  (int8 zero point -128), Tanh 1/128 in the middle (int8 zero point 0).

All scales are float32, because that is what ONNX and TFLite store and what integer kernels derive their
multipliers from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgeq.quantization.weight_pairs import limit_pairs, pair_safe_scales

BIAS_LIMIT = 2**30


@dataclass(frozen=True)
class QType:
    name: str
    dtype: np.dtype
    ir_dtype: ir.DataType
    qmin: int
    qmax: int
    symmetric: bool = False


ACTIVATION_TYPES = {
    "int8": QType("int8", np.dtype(np.int8), ir.DataType.INT8, -128, 127),
    "uint8": QType("uint8", np.dtype(np.uint8), ir.DataType.UINT8, 0, 255),
    "int16": QType("int16", np.dtype(np.int16), ir.DataType.INT16, -32768, 32767, symmetric=True),
}

_FIXED_OUTPUT_SCALE = {"Softmax": 1.0 / 256.0, "Sigmoid": 1.0 / 256.0, "Tanh": 1.0 / 128.0}


@dataclass(frozen=True)
class Encoding:
    scale: np.float32
    zero_point: int
    qtype: QType

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.rint(np.asarray(x, np.float32) / self.scale) + self.zero_point
        return np.clip(q, self.qtype.qmin, self.qtype.qmax).astype(self.qtype.dtype)

    def representable_range(self) -> tuple[float, float]:
        s = float(self.scale)
        return (s * (self.qtype.qmin - self.zero_point), s * (self.qtype.qmax - self.zero_point))


def range_method(calib_method: str, qtype: QType) -> str:
    """The calibration method that sets QTYPE's activation ranges; "auto" (the default) is percentile for 8-bit
    activations and minmax for int16. Percentile clipping trades range for 8-bit resolution; int16's 65536 steps
    hold every tensor's whole range (the percentile cut the few huge FFN outputs BERT-family models depend on:
    paraphrase-MiniLM-L3's 16x8 .tflite gave a sentence-embedding SQNR of 14.1 dB with 99.99th-percentile ranges,
    35.2 dB with minmax). A method asked for by name is used as it is."""
    if calib_method != "auto":
        return calib_method
    return "minmax" if qtype.name == "int16" else "percentile"


def activation_encoding(lo: float, hi: float, qtype: QType) -> Encoding:
    """The per-tensor encoding of a calibrated range [lo, hi] (widened to contain 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if qtype.symmetric:
        scale = np.float32(max(-lo, hi) / qtype.qmax)
        return Encoding(scale if scale > 0 else np.float32(1.0), 0, qtype)
    if not hi > lo:  # an all-zero tensor: any scale represents it exactly
        return Encoding(np.float32(1.0), int(np.clip(0, qtype.qmin, qtype.qmax)), qtype)
    # at least the smallest normal float32: a subnormal scale rounds so coarsely that the grid misses the range
    scale = np.float32(max((hi - lo) / (qtype.qmax - qtype.qmin), float(np.finfo(np.float32).tiny)))
    zero_point = int(np.clip(np.rint(qtype.qmin - lo / float(scale)), qtype.qmin, qtype.qmax))
    return Encoding(scale, zero_point, qtype)


def fixed_output_encoding(op_type: str, qtype: QType) -> Encoding | None:
    """TFLite's required output encoding for Softmax/Sigmoid/Tanh, or None for other ops."""
    scale = _FIXED_OUTPUT_SCALE.get(op_type)
    if scale is None:
        return None
    if qtype.symmetric:  # int16: TFLite uses 1/32768 on the positive range for all three
        return Encoding(np.float32(1.0 / 32768.0), 0, qtype)
    if op_type == "Tanh":
        return Encoding(np.float32(scale), (qtype.qmin + qtype.qmax + 1) // 2, qtype)
    return Encoding(np.float32(scale), qtype.qmin, qtype)


def weight_qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def weight_scales(w: np.ndarray, axis: int | None, bits: int, method: str = "minmax") -> np.ndarray:
    """Symmetric narrow-range scales: one per slice along AXIS, or one for the tensor (axis None).

    "minmax" maps max|w_c| to the largest integer. "mse" shrinks the clipping threshold to a * max|w_c|,
    a in [0.5, 1], choosing per channel the a that minimizes sum (w - s * clamp(round(w / s)))^2: clipping a
    few outliers buys finer steps for all other weights (it matters most at 4 bits).
    """
    rows = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    absmax = np.abs(rows).max(axis=1).astype(np.float64)
    qmax = weight_qmax(bits)
    if method == "mse":
        best_err = np.full(absmax.shape, np.inf)
        best_scale = absmax / qmax
        for ratio in np.linspace(0.5, 1.0, 51):
            scale = np.maximum(ratio * absmax / qmax, 1e-30)[:, None]
            err = np.sum((np.clip(np.rint(rows / scale), -qmax, qmax) * scale - rows) ** 2, axis=1)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale = np.where(better, scale[:, 0], best_scale)
        scales = best_scale.astype(np.float32)
    else:
        scales = (absmax / qmax).astype(np.float32)
    # An all-zero channel is exact with any scale; 1.0 keeps the bias scale well away from 0.
    return np.where(scales > 0, scales, np.float32(1.0)).astype(np.float32)


def quantize_weights(
    w: np.ndarray, scales: np.ndarray, axis: int | None, bits: int, *, channel_axis: int | None = None
) -> np.ndarray:
    """Integer weights q = round(w / scale), clamped to the narrow range.

    With CHANNEL_AXIS (the layer's output-channel axis), rounding also preserves each output channel's sum:
    after rounding to nearest, sum_i q_i may differ from round(sum_i w_i / s) by a few units, which shifts
    the channel's response to its input's mean (its DC gain) by that many steps. Such a shift is a bias, not
    noise: it does not average out, and it is large where BatchNorm folding made the weights big but their sum
    small (MobileNetV2's first depthwise layer: 22 dB -> 34 dB logits SQNR with only that layer quantized).
    The deficit d is removed by moving the |d| weights whose rounding residual was closest to 1/2 the other way,
    so each of them changes by one step and its own error stays below one step. In a channel whose largest
    weights were clipped (``weight_range="mse"``), the deficit also holds the clipped mass, which the channel's
    other weights take up, one step each at most, so their error stays below 1.5 steps.
    """
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    x = w / scales.reshape(shape)
    limit = weight_qmax(bits)
    q = np.clip(np.rint(x), -limit, limit)
    if channel_axis is not None:
        q = _preserve_channel_sums(np.moveaxis(x, channel_axis, 0), np.moveaxis(q, channel_axis, 0), limit)
        q = np.moveaxis(q, 0, channel_axis)
    return q.astype(np.int8)


def _preserve_channel_sums(x: np.ndarray, q: np.ndarray, limit: int) -> np.ndarray:
    rows_x, rows_q = x.reshape(x.shape[0], -1), q.reshape(q.shape[0], -1).copy()
    deficit = np.rint(rows_x.sum(axis=1)) - rows_q.sum(axis=1)
    residual = rows_x - rows_q
    columns = np.arange(rows_q.shape[1])
    for direction in (1, -1):
        # only the rows short in DIRECTION (each row is sorted on its own: the others would move no weight)
        rows = np.flatnonzero(deficit * direction > 0)
        need = np.abs(deficit[rows])
        # candidates: the largest residual in DIRECTION first, never past the clamp
        key = np.where(rows_q[rows] * direction < limit, -direction * residual[rows], np.inf)
        rank = np.empty_like(key, dtype=np.int64)
        np.put_along_axis(rank, np.argsort(key, axis=1), columns[None, :].repeat(len(key), 0), axis=1)
        rows_q[rows] += direction * ((rank < need[:, None]) & np.isfinite(key))
    return rows_q.reshape(q.shape)


@dataclass
class QuantizedLinear:
    """The integer form of a layer's weights and bias."""

    weight: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray | None
    bias_scale: np.ndarray | None
    raised_channels: list[int]


def quantize_linear_layer(
    w: np.ndarray,
    b: np.ndarray | None,
    *,
    axis: int,
    input_scale: np.float32,
    bits: int = 8,
    per_channel: bool = True,
    weight_range: str = "minmax",
    preserve_channel_sums: bool = True,
    bias_channel_repeat: int = 1,
    pair_limit: int | None = None,
    scales: np.ndarray | None = None,
) -> QuantizedLinear:
    """Quantize weights W (output channels on AXIS) and bias B for an input of scale INPUT_SCALE; with PAIR_LIMIT,
    no two integer weights of a channel exceed it in magnitude together (edgeq.quantization.weight_pairs).

    BIAS_CHANNEL_REPEAT maps bias channels to weight channels when they differ (ConvTranspose with groups
    has Cout/group weight channels on axis 1 and Cout bias channels: bias channel c uses scale c % (Cout/g)).
    SCALES: weight_scales' result when the caller already has it.
    """
    if scales is None:
        scales = weight_scales(w, axis if per_channel else None, bits, weight_range)
    if pair_limit is not None:
        scales = pair_safe_scales(w, scales, axis, weight_qmax(bits), pair_limit)
    raised: list[int] = []
    if b is not None:
        b = np.asarray(b, np.float32).reshape(-1)
        need = np.abs(b.astype(np.float64)) / (float(input_scale) * BIAS_LIMIT)
        per_bias = np.tile(scales, bias_channel_repeat) if per_channel else np.repeat(scales, b.size)
        too_small = need > per_bias
        if too_small.any():
            idx = np.flatnonzero(too_small)
            weight_idx = idx % scales.size if per_channel else np.zeros_like(idx)
            for i, c in zip(idx, weight_idx, strict=True):
                scales[c] = max(scales[c], np.float32(need[i] * (1 + 1e-6)))
            raised = sorted({int(c) for c in weight_idx})
    q = quantize_weights(
        w, scales, axis if per_channel else None, bits, channel_axis=axis if preserve_channel_sums else None
    )
    if pair_limit is not None:  # keeping channel sums may have moved a pair's weights one step up
        q = limit_pairs(q, axis, pair_limit)
    if b is None:
        return QuantizedLinear(q, scales, None, None, raised)
    per_bias = np.tile(scales, bias_channel_repeat) if per_channel else np.repeat(scales, b.size)
    bias_scale = (np.float32(input_scale) * per_bias).astype(np.float32)
    bias_q = np.clip(np.rint(b / bias_scale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
    if not per_channel:
        bias_scale = bias_scale[:1]
    return QuantizedLinear(q, scales, bias_q, bias_scale, raised)


def dequantized_constant(dequantize: ir.Node) -> np.ndarray | None:
    """What DequantizeLinear node DEQUANTIZE computes from constant inputs, scale * (q - zero_point) in float32
    (per axis when the scale is a vector), or None if an input is not constant."""
    arrays = [v.const_value.numpy() if v is not None and v.const_value is not None else None for v in dequantize.inputs]
    if any(a is None for a in arrays):
        return None
    q, scale, *zero = arrays
    shape = [1] * q.ndim
    if scale.ndim and q.ndim:
        shape[dequantize.attributes.get_int("axis", 1)] = -1
    offset = q.astype(np.float32) - (zero[0].reshape(shape).astype(np.float32) if zero else 0)
    return offset * scale.reshape(shape)
