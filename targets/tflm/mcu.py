"""An estimate of TFLite Micro's latency on Cortex-M microcontrollers, from the static analysis' per-layer counts (targets/tflite/analysis.py).

This is an estimate, not a measurement: no device was run. It has two parts.

1. Derived cycles. Each operator is priced by the loop structure of the CMSIS-NN int8 kernel that TFLite Micro
   runs for it (CMSIS-NN as of mid-2020, the one TFLite Micro v2.3.1 builds with ``TAGS=cmsis-nn``; read in
   github.com/ARM-software/CMSIS_5, CMSIS/NN/Source), counting one instruction per C operation and the
   Cortex-M4 instruction timings (Cortex-M4 Technical Reference Manual, ARM DDI 0439B, table 3-1: LDR 2 cycles;
   data processing, SXTB16/SXTAB16, PKHBT, MLA and SMLAD 1; a taken loop branch 1 + a 1-3 cycle refill,
   counted as 3 with its counter update):

   * CONV_2D, arm_convolve_s8: per pair of output pixels an im2col of the K = kh*kw*C_in inputs into int16
     (arm_q7_to_q15_with_offset: LDR, 2 SXTAB16, 2 PKH, 2 STR and the loop per 4 values = 11 cycles per 4),
     then arm_nn_mat_mult_kernel_s8_s16 computes 2 output channels x 2 pixels: per 4 values of K, 4 LDR of
     int16 pairs, 2 read_and_pad (LDR, 2 SXTB16, 2 PKH), 8 SMLAD and the loop = 31 cycles per 16 MACs.
     20 cycles per output pixel for the im2col calls and their padding tests (an assumption: ~3 calls of a
     few instructions).
   * DEPTHWISE_CONV_2D, arm_depthwise_conv_3x3_s8: per 4 channels and kernel row, 3 taps of 2 LDR (input and
     weights) + 4 x (SXTB, ADD offset, SXTB, MLA) plus 6 for the row's edge tests and pointers = 66 cycles per
     12 MACs; 5 more per output for the 4-channel group's bias loads and addressing.
   * FULLY_CONNECTED, arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8: 2 rows x 4 columns per iteration,
     3 LDR, 2 SXTAB16, 4 SXTB16, 4 SMLAD and the loop = 19 cycles per 8 MACs; 5 per output for the row setup.
   * Every conv/depthwise/FC output is requantized: arm_nn_requantize (64-bit doubling high multiply with
     rounding, rounding right shift), the offset, the clamp, the store and the per-channel multiplier/shift
     loads: 30 cycles.
   * ADD (arm_elementwise_add_s8): two input rescales and one output requantization per element, 3 x 30 + 10.
     PAD (TFLite Micro's reference kernel, an index loop per element): 15 cycles per output element, an
     assumption. Pooling, RESHAPE, SOFTMAX and the rest: 1 cycle per output byte, an assumption (under 0.1% of
     the MLPerf Tiny models' cycles).

   The analysis rows carry no kernel sizes, so every CONV_2D is priced as arm_convolve_s8; a 1x1 stride-1 conv
   runs arm_convolve_1x1_s8_fast, whose inner loop (reordered reads without PKH, or no im2col in later
   versions) takes 6-13% fewer cycles: the pointwise layers of DS-CNN and MobileNetV1 may be priced that much
   high. Depthwise kernels other than 3x3 (arm_depthwise_conv_s8_opt) get the 3x3 kernel's cost per MAC.

2. Two fitted factors, measured cycles / derived cycles: one for the fully-connected kernel, one for everything
   else. The derived counts are an idealised instruction stream; what the factors absorb (GCC 6 at -Os against
   hand-counted loops, possible register spills in the 2x2 kernel, the flash wait states at 120 MHz on weight
   reads and instruction-cache misses) is not modelled separately and was not measured.

Cortex-M4F fit: MLPerf Tiny v0.5 reference submission (TFLite Micro v2.3.1 with CMSIS-NN on the NUCLEO-L4R5ZI,
Cortex-M4F at 120 MHz; github.com/mlcommons/tiny_results_v0.5, closed/reference; Banbury et al. 2021, "MLPerf
Tiny Benchmark", table 4), with the models rebuilt by models/mlperf_tiny.py. Measured over derived cycles, per
model: ResNet-8 2.68, DS-CNN 2.53, MobileNetV1-0.25 2.67, FC autoencoder 1.75: one factor serves the three
convolutional models within 6%, the fully-connected model runs 35% faster than that factor says.

How the form and the fit pair were chosen: the per-kernel-family form was chosen after seeing these four ratios,
so it is informed by the held-back models too, and their errors below are not a clean validation. The FC factor
can only be fitted on the autoencoder (the other models' FC layers are under 0.03% of their derived cycles); the
other factor is fitted on ResNet-8 because its cycles are one kernel (arm_convolve_s8 90%, ADD 9%), so that the
depthwise and pointwise layers of the held-back DS-CNN and MobileNetV1 are priced by the derived counts alone.
Held-back error (``python -m models.mlperf_tiny``): DS-CNN +5.7% (192 vs 182 ms), MobileNetV1-0.25 +0.3% (602 vs
600 ms).

Forms compared, each with the same derived counts (error in % on the two held-back models for each fit pair; RN
ResNet-8, DS DS-CNN, MN MobileNetV1, AE autoencoder):

    form                                           fit RN+AE      fit DS+AE      fit MN+AE      fit RN+MN
    a x derived + b x flash weight bytes read      DS +11 MN +9   RN -9 MN -3    RN -7 DS +3    DS +6 AE +55
    a x MAC-loop cycles + b x other cycles         DS +19 MN +30  RN -13 MN +6   RN -16 DS -4   DS +6 AE +54
    one factor per kernel family (this module)     DS +6 MN +0    RN -5 MN -5    RN -0 DS +5    (no FC in fit)
    one factor on derived cycles, fit on RN alone: DS +6 MN +0 AE +53

(Flash bytes: weights are re-read from flash once per pixel pair by the 2x2 conv kernel, once per pixel by the
depthwise kernel and once by FC.) The flash form fits a negative cost per weight byte whenever the autoencoder is
in the fit (-3.7 to -5.0 cycles per byte, where 5 wait states per 8-byte read would cost about +0.75), so it is
not physical; every form fitted on two convolutional models leaves the autoencoder 23-110% off. The earlier form
of this module (3.24 cycles per MAC + 206 per conv/depthwise/FC output, fitted on MobileNetV1 and the autoencoder)
was -31% on ResNet-8 and +7% on DS-CNN.

Cortex-M7 and Cortex-M55 are not fitted to any measurement: they scale the Cortex-M4F's derived cycles by
documented architecture ratios and keep its two factors, and are less certain than the M4F estimate.

* Cortex-M7 (216 MHz, the STM32F746 of the CMSIS-NN paper, Lai, Suda and Chandra 2018, arXiv:1801.06601): the
  same DSP instructions (SMLAD, two 16-bit MACs), but dual-issue; all cycles are scaled by the CoreMark/MHz ratio
  3.42 / 5.01 (Arm's published figures for Cortex-M4 and Cortex-M7), a general-purpose proxy for the gain.
* Cortex-M55 (400 MHz, e.g. the high-performance core of Alif's Ensemble E7): Helium (MVE). The kernels' MAC
  loops are divided by 4: a dual-beat MVE VMLADAV on int8 vectors retires 8 int8 MACs per cycle against SMLAD's
  2 (Arm Cortex-M55 Technical Reference Manual, beats per tick), the architectural peak ratio; the rest
  (requantization, im2col, other operators) is scaled by the CoreMark/MHz ratio 3.42 / 4.2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Derived Cortex-M4 cycles of the CMSIS-NN kernels (see the docstring for the instruction counts).
_CONV_CYCLES_PER_MAC = 31 / 16  # arm_nn_mat_mult_kernel_s8_s16, 2 channels x 2 pixels
_IM2COL_CYCLES_PER_VALUE = 11 / 4  # arm_q7_to_q15_with_offset
_IM2COL_CYCLES_PER_PIXEL = 20  # assumption: the im2col calls and padding tests per output pixel
_DEPTHWISE_CYCLES_PER_MAC = 66 / 12  # arm_depthwise_conv_3x3_s8, per kernel row of 4 channels
_DEPTHWISE_CYCLES_PER_OUTPUT = 5  # bias loads and addressing of each 4-channel group
_FC_CYCLES_PER_MAC = 19 / 8  # arm_nn_vec_mat_mult_t_s8, 2 rows x 4 columns
_FC_CYCLES_PER_OUTPUT = 5  # row setup
_REQUANTIZE_CYCLES = 30  # arm_nn_requantize + offset + clamp + store + multiplier/shift loads
_ADD_CYCLES_PER_ELEMENT = 3 * _REQUANTIZE_CYCLES + 10  # arm_elementwise_add_s8: 2 input rescales + 1 output
_PAD_CYCLES_PER_ELEMENT = 15  # assumption: TFLite Micro's reference PAD, an index loop per element
_CYCLES_PER_BYTE_MOVED = 1  # assumption: pooling, RESHAPE, SOFTMAX, ...

# Measured / derived cycles, MLPerf Tiny v0.5 reference submission (Cortex-M4F, 120 MHz): the fit of the docstring
# on ResNet-8 (the convolution kernels and every other operator) and the FC autoencoder (fully connected).
_M4F_FACTOR = 2.678
_M4F_FC_FACTOR = 1.749
_COREMARK_PER_MHZ = {"cortex-m4f": 3.42, "cortex-m7": 5.01, "cortex-m55": 4.2}  # Arm's product pages
_HELIUM_MAC_SPEEDUP = 4.0  # 8 int8 MACs per cycle (dual-beat MVE) against SMLAD's 2


@dataclass(frozen=True)
class DeviceProfile:
    """A core: its clock, the fitted factors on the derived Cortex-M4 cycles, and how its MAC loops and its
    other work scale from the Cortex-M4's."""

    name: str
    clock_hz: float
    factor: float  # measured / derived cycles of every operator but FULLY_CONNECTED
    fc_factor: float  # measured / derived cycles of FULLY_CONNECTED
    mac_loop_scale: float  # this core's cycles per Cortex-M4 cycle in the kernels' MAC loops
    other_scale: float  # ... in everything else
    source: str


def _scaled(name: str, clock_hz: float, mac_speedup: float, source: str) -> DeviceProfile:
    general = _COREMARK_PER_MHZ["cortex-m4f"] / _COREMARK_PER_MHZ[name]
    return DeviceProfile(name, clock_hz, _M4F_FACTOR, _M4F_FC_FACTOR, 1 / mac_speedup, general, source)


PROFILES = {
    "cortex-m4f": DeviceProfile(
        "cortex-m4f",
        120e6,
        _M4F_FACTOR,
        _M4F_FC_FACTOR,
        1.0,
        1.0,
        "CMSIS-NN kernels' instruction counts, two factors fitted to the MLPerf Tiny v0.5 reference submission "
        "(NUCLEO-L4R5ZI, TFLite Micro v2.3.1, 120 MHz)",
    ),
    "cortex-m7": _scaled(
        "cortex-m7",
        216e6,
        _COREMARK_PER_MHZ["cortex-m7"] / _COREMARK_PER_MHZ["cortex-m4f"],
        "Cortex-M4F scaled by CoreMark/MHz (5.01 vs 3.42); not fitted to a measurement",
    ),
    "cortex-m55": _scaled(
        "cortex-m55",
        400e6,
        _HELIUM_MAC_SPEEDUP,
        "Cortex-M4F with Helium's 4x int8 MAC peak and CoreMark/MHz (4.2 vs 3.42); not fitted to a measurement",
    ),
}


def derived_cycles(layer: dict) -> tuple[float, float]:
    """(MAC-loop cycles, other cycles) of one static-analysis layer (targets/tflite/analysis.py) on a Cortex-M4 (see the docstring)."""
    macs, outputs = layer["macs"], layer["output_bytes"]  # int8 activations: one byte per element
    if layer["kind"] == "conv":
        k = macs // outputs  # kh * kw * C_in
        channels = max(round(layer["params"] / (k + 1)), 1)  # K weights and one bias per output channel
        pixels = outputs / channels
        im2col = pixels * (_IM2COL_CYCLES_PER_VALUE * k + _IM2COL_CYCLES_PER_PIXEL)
        return _CONV_CYCLES_PER_MAC * macs, im2col + _REQUANTIZE_CYCLES * outputs
    if layer["kind"] == "depthwise":
        per_output = _REQUANTIZE_CYCLES + _DEPTHWISE_CYCLES_PER_OUTPUT
        return _DEPTHWISE_CYCLES_PER_MAC * macs, per_output * outputs
    if layer["kind"] == "fully_connected":
        return _FC_CYCLES_PER_MAC * macs, (_REQUANTIZE_CYCLES + _FC_CYCLES_PER_OUTPUT) * outputs
    if layer["op"] == "ADD":
        return 0.0, _ADD_CYCLES_PER_ELEMENT * outputs
    if layer["op"] in ("PAD", "PADV2"):
        return 0.0, _PAD_CYCLES_PER_ELEMENT * outputs
    return 0.0, _CYCLES_PER_BYTE_MOVED * outputs


def estimate(analysis: dict, profile: DeviceProfile) -> dict:
    """Estimated cycles and latency of the .tflite whose static analysis (targets/tflite/analysis.py) is ANALYSIS, on PROFILE."""
    if analysis.get("format") != "tflite":
        raise ValueError("the MCU estimate prices TFLite Micro operators: analyse the .tflite")
    per_layer = []
    for layer in analysis["layers"]:
        mac_loop, other = derived_cycles(layer)
        factor = profile.fc_factor if layer["kind"] == "fully_connected" else profile.factor
        cycles = factor * (profile.mac_loop_scale * mac_loop + profile.other_scale * other)
        per_layer.append({"name": layer["name"], "op": layer["op"], "cycles": round(cycles)})
    total = sum(row["cycles"] for row in per_layer)
    return {
        "device": asdict(profile),
        "cycles": total,
        "latency_ms": total / profile.clock_hz * 1e3,
        "layers": per_layer,
        "note": "estimate from CMSIS-NN kernel instruction counts and documented device profiles, not a measurement",
    }
