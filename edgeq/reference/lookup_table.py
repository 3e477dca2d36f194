"""The tables of the kernels that evaluate a float function per input value: 256 entries for int8, 513 for int16.

LiteRT's kernels for TANH and LOGISTIC (BUILTIN_REF), ELU, GELU, EXP and LOG, and TFLite Micro's ELU, fill a table
in Prepare with LUTPopulate<int8_t> (tensorflow/lite/kernels/internal/common.h) and look every element up:

    table[v] = clamp(round_half_away(f(S_in * float32(v - zp_in)) * float32(1 / S_out)) + zp_out, -128, 127)

for v = -128 .. 127, every step in float32 and f the C library's float function (expm1f, tanhf, erfcf, expf, logf).
:func:`libm` calls this process's C math library, the one the runtimes call: glibc's expm1f, for one, is not
correctly rounded (expm1f(-1.7880275) is one float32 step from the nearest), and an output can sit on the
rounding tie that step decides (measured: ELU, 3 of 4 such tables). Without a C math library (Windows) the
functions are evaluated in double and rounded to float32. A value beyond the int8 range saturates, however large
(an exp that overflows to inf gives 127: measured in LiteRT).

The int16 kernels use 513-entry tables instead (:func:`populate_int16`, :func:`look_up_int16`: SOFTMAX, and
LiteRT's GELU, EXP, LOG and RSQRT) and TFLite's fixed sigmoid table (SIGMOID_TABLE_UINT16: LOGISTIC and TANH),
both interpolated linearly.
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


def libm(
    name: str, fallback: Callable[[np.ndarray], np.ndarray], dtype: type = np.float32
) -> Callable[[np.ndarray], np.ndarray]:
    """The C library's function NAME on arrays of DTYPE: a float function (e.g. "expm1f") for float32, a double one
    (e.g. "exp") for float64; FALLBACK (a numpy function, evaluated in double and rounded to DTYPE) where there is
    no C math library."""
    library = _c_math_library()
    if library is None:
        return lambda x: np.asarray(fallback(np.asarray(x, np.float64)), dtype)
    function = getattr(library, name)
    c_type = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    function.argtypes, function.restype = [c_type], c_type
    return lambda x: np.array([function(float(v)) for v in np.asarray(x, dtype).reshape(-1)], dtype).reshape(
        np.shape(x)
    )


def look_up(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """TABLE[v] for every int8 element v of X (the table is indexed from -128)."""
    return table[np.asarray(x).astype(np.intp) + 128]


# ----------------------------------------------------------------------------- int16

# TFLite's sigmoid_table_uint16 (tensorflow/lite/kernels/internal/common.h): sigmoid(i / 24) in unsigned Q0.16 for
# i = 0 .. 255, the table the int16 LOGISTIC and TANH kernels interpolate (tanh(x) = 2 sigmoid(2x) - 1). The
# entries are TFLite's constants; they are not a rounding of the float function (25 differ by one step from it).
SIGMOID_TABLE_UINT16 = np.array(
    [
        32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064,
        42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464,
        50942, 51409, 51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503,
        56823, 57133, 57433, 57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370,
        60565, 60753, 60935, 61110, 61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666,
        62778, 62886, 62990, 63090, 63186, 63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968,
        64030, 64090, 64148, 64204, 64257, 64308, 64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687,
        64721, 64754, 64786, 64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079,
        65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258, 65269, 65280, 65291,
        65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367, 65374, 65381, 65387, 65393, 65399, 65404,
        65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465,
        65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498,
        65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513, 65514, 65515, 65516,
        65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524, 65525, 65525,
        65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530, 65530,
        65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
        65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
        65535,
    ],
    np.int64,
)  # fmt: skip

INT16_TABLE_SIZE = 513  # 512 segments of 128 inputs each, and the right end of the last one


def populate_int16(
    transform: Callable[[np.ndarray], np.ndarray],
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    precision=np.float32,
) -> np.ndarray:
    """LUTPopulate<int16_t> (LUTPopulateInt16<FloatT>, common.h): the 513-entry table of TRANSFORM that
    :func:`look_up_int16` interpolates, every step in PRECISION (FloatT: np.float32 or np.float64).

    The input range [S_in (-32768 - zp_in), S_in (32767 - zp_in)] is cut into 512 steps; entry i is f at the left
    end of step i in output units (round_half_away(f * 65536 / (output range))), minus half the error of the
    linear interpolation at the step's midpoint (rounded), so that interpolated values straddle f; entry 512 is
    f at the right end. Entries are clamped to int16 as std::min/std::max clamp: an entry that is NaN (f or its
    rescaling overflowed to inf, and inf - inf appeared in the bias) stays NaN and its conversion to int16 gives 0
    on x86 (measured in LiteRT: EXP with a large input range); -inf clamps to -32768.
    """
    f = precision
    scale_in, scale_out = f(input_scale), f(output_scale)
    input_min = scale_in * f(-32768 - input_zero_point)
    input_max = scale_in * f(32767 - input_zero_point)
    output_min = scale_out * f(-32768 - output_zero_point)
    output_max = scale_out * f(32767 - output_zero_point)
    step = (input_max - input_min) / f(512)
    half_step = step / f(2)
    inverse = f(65536) / (output_max - output_min)
    i = np.arange(512).astype(f)
    left = input_min + i * step
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN entries: see above
        value = np.asarray(transform(left), f)
        midpoint = np.asarray(transform(left + half_step), f)
        following = np.asarray(transform(input_min + (i + f(1)) * step), f)
        sample = round_half_away(value * inverse).astype(f)
        interpolated = round_half_away(((following * inverse) + sample) / f(2)).astype(f)
        error = interpolated - round_half_away(midpoint * inverse).astype(f)
        bias = round_half_away(error / f(2)).astype(f)
        last = round_half_away(np.asarray(transform(np.array([input_max], f)), f) * inverse).astype(f)
        table = np.concatenate([sample - bias, last])
    return np.where(np.isnan(table), 0, np.clip(table, -32768, 32767)).astype(np.int64)


def look_up_int16(table: np.ndarray, x) -> np.ndarray:
    """LUTLookup(int16): TABLE (513 entries) at the int16 values X, interpolated between entries 128 inputs apart:
    base = table[256 + (x >> 7)], slope = the next entry minus base, base + ((slope * (x & 127) + 64) >> 7).
    slope and the result are int16 in C++ and wrap (two neighbours further apart than 32767, e.g. 32767 next to
    -32768, give slope 1: measured in LiteRT), which monotone tables never reach."""
    x = np.asarray(x, np.int64)
    index = 256 + (x >> 7)
    base = table[index]
    slope = _wrap_int16(table[index + 1] - base)
    return _wrap_int16(base + ((slope * (x & 0x7F) + 64) >> 7))


def _wrap_int16(x: np.ndarray) -> np.ndarray:
    return ((x + 32768) & 0xFFFF) - 32768
