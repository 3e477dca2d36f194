"""The 256-entry tables of the int8 kernels that evaluate a float function once per possible input value.

LiteRT's kernels for TANH and LOGISTIC (BUILTIN_REF), ELU, GELU, EXP and LOG, and TFLite Micro's ELU, fill a table
in Prepare with LUTPopulate<int8_t> (tensorflow/lite/kernels/internal/common.h) and look every element up:

    table[v] = clamp(round_half_away(f(S_in * float32(v - zp_in)) * float32(1 / S_out)) + zp_out, -128, 127)

for v = -128 .. 127, every step in float32 and f the C library's float function (``transform`` here: evaluated in
double and rounded to float32, which is what glibc's correctly rounded float functions return; a function that
is not correctly rounded can differ by one float32 step, which changes an output only at a rounding tie). A value
beyond the int8 range saturates, however large (an exp that overflows to inf gives 127: measured in LiteRT).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeq.reference.arithmetic import round_half_away


def populate(
    transform: Callable[[np.ndarray], np.ndarray],
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
) -> np.ndarray:
    """LUTPopulate<int8_t>: the int8 table of TRANSFORM (float32 in, float32 out) between the two encodings."""
    dequantized = np.float32(input_scale) * (np.arange(-128, 128) - input_zero_point).astype(np.float32)
    with np.errstate(over="ignore"):  # an overflow to inf saturates (module docstring)
        transformed = np.asarray(transform(dequantized), np.float32)
        rescaled = round_half_away(transformed * (np.float32(1.0) / np.float32(output_scale))).astype(
            np.float32
        )
        shifted = rescaled + np.float32(output_zero_point)
    return np.clip(shifted, -128, 127).astype(np.int8)


def in_float32(function: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """FUNCTION evaluated in double on float32 arguments and rounded to float32 (a correctly rounded libm float)."""
    return lambda x: np.asarray(function(np.asarray(x, np.float64)), np.float32)


def look_up(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """TABLE[v] for every int8 element v of X (the table is indexed from -128)."""
    return table[np.asarray(x).astype(np.intp) + 128]
