"""The 256-entry tables of the int8 kernels that evaluate a float function once per possible input value.

LiteRT's kernels for TANH and LOGISTIC (BUILTIN_REF), ELU, GELU, EXP and LOG, and TFLite Micro's ELU, fill a table
in Prepare with LUTPopulate<int8_t> (tensorflow/lite/kernels/internal/common.h) and look every element up:

    table[v] = clamp(round_half_away(f(S_in * float32(v - zp_in)) * float32(1 / S_out)) + zp_out, -128, 127)

for v = -128 .. 127, every step in float32 and f the C library's float function (expm1f, tanhf, erfcf, expf, logf).
:func:`libm` calls this process's C math library, the one the runtimes call: glibc's expm1f, for one, is not
correctly rounded (expm1f(-1.7880275) is one float32 step from the nearest), and an output can sit on the
rounding tie that step decides (measured: ELU, 3 of 4 such tables). Without a C math library (Windows) the
functions are evaluated in double and rounded to float32. A value beyond the int8 range saturates, however large
(an exp that overflows to inf gives 127: measured in LiteRT).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
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


@functools.cache
def _c_math_library():
    name = ctypes.util.find_library("m")
    return None if name is None else ctypes.CDLL(name)


def libm(name: str, fallback: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The C library's float function NAME (e.g. "expm1f") on float32 arrays; FALLBACK (a numpy function, evaluated
    in double and rounded to float32) where there is no C math library."""
    library = _c_math_library()
    if library is None:
        return lambda x: np.asarray(fallback(np.asarray(x, np.float64)), np.float32)
    function = getattr(library, name)
    function.argtypes, function.restype = [ctypes.c_float], ctypes.c_float
    return lambda x: np.array(
        [function(float(v)) for v in np.asarray(x, np.float32).reshape(-1)], np.float32
    ).reshape(np.shape(x))


def look_up(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """TABLE[v] for every int8 element v of X (the table is indexed from -128)."""
    return table[np.asarray(x).astype(np.intp) + 128]
