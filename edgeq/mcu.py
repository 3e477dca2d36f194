"""An estimate of TFLite Micro's latency on Cortex-M microcontrollers, from edgeq.analysis' per-layer counts.

This is an estimate, not a measurement: no device was run. The model is

    cycles = cycles_per_mac * MACs + cycles_per_output * (output elements of CONV_2D, DEPTHWISE_CONV_2D and
             FULLY_CONNECTED) + cycles_per_byte_moved * (output bytes of every other operator)
    latency = cycles / clock

The MAC term is the inner loop (CMSIS-NN's SMLAD-based int8 kernels, Lai, Suda and Chandra 2018, "CMSIS-NN:
Efficient Neural Network Kernels for Arm Cortex-M CPUs", arXiv:1801.06601, section 3). The per-output term is
what each output element costs beyond its MACs: requantization (SaturatingRoundingDoublingHighMul, shift, offset,
clamp), the im2col copy that CMSIS-NN's convolutions fill per output pixel, and loop set-up. It is what makes a
depthwise layer (9 MACs per output) cost several times more per MAC than a convolution (hundreds), and a
fully-connected layer (one output per row) less.

Cortex-M4F: the two free parameters (cycles_per_mac, cycles_per_output) are fitted to the MLPerf Tiny v0.5
reference submission (TFLite Micro on the NUCLEO-L4R5ZI, Cortex-M4F at 120 MHz; Banbury et al. 2021, "MLPerf
Tiny Benchmark", table 4) on two of its four models, MobileNetV1-0.25 (600 ms) and the FC autoencoder (10 ms), with
the models rebuilt by models/mlperf_tiny.py; the other two are held back. Measured error on them (``python -m
models.mlperf_tiny``): ResNet-8 -31% (estimate 486 ms, published 704 ms), DS-CNN +7% (195 ms vs 182 ms). Fitting
other pairs, or other two-parameter forms (MACs + operators, one cycles-per-MAC for conv/FC and one for
depthwise), left one held-back model 30-50% off in every case: ResNet-8's 3x3 convolutions and the
autoencoder's fully-connected layers do not share one cost per MAC. cycles_per_byte_moved (PAD, ADD, pooling,
RESHAPE, SOFTMAX) is not fitted: 1 cycle per byte, the order of a byte copy loop (an assumption; these
operators are under 1% of the MLPerf Tiny models' estimated cycles).

Cortex-M7 and Cortex-M55 are not fitted to any measurement: they scale the Cortex-M4F cycles by documented
architecture ratios, and are less certain than the M4F estimate.

* Cortex-M7 (216 MHz, the STM32F746 of the CMSIS-NN paper): the same DSP instructions (SMLAD, two 16-bit MACs),
  but dual-issue; every cycle count is scaled by the CoreMark/MHz ratio 3.42 / 5.01 (Arm's published figures for
  Cortex-M4 and Cortex-M7), a general-purpose proxy for the dual-issue gain.
* Cortex-M55 (400 MHz, e.g. the high-performance core of Alif's Ensemble E7): Helium (MVE). The MAC term is
  divided by 4: a dual-beat MVE VMLADAV on int8 vectors retires 8 int8 MACs per cycle against SMLAD's 2 (Arm
  Cortex-M55 Technical Reference Manual, beats per tick), which is the architectural peak ratio; the per-output
  and data-movement terms are scaled by the CoreMark/MHz ratio 3.42 / 4.2 (Arm's published figures).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MAC_KINDS = ("conv", "depthwise", "fully_connected")

# MLPerf Tiny v0.5 reference: Cortex-M4F at 120 MHz; the fit (see the docstring) on MobileNetV1-0.25 and the FC
# autoencoder of models/mlperf_tiny.py.
_M4F_CYCLES_PER_MAC = 3.241
_M4F_CYCLES_PER_OUTPUT = 205.6
_M4F_CYCLES_PER_BYTE_MOVED = 1.0
_COREMARK_PER_MHZ = {"cortex-m4f": 3.42, "cortex-m7": 5.01, "cortex-m55": 4.2}  # Arm's product pages
_HELIUM_MAC_SPEEDUP = 4.0  # 8 int8 MACs per cycle (dual-beat MVE) against SMLAD's 2


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    clock_hz: float
    cycles_per_mac: float
    cycles_per_output: float
    cycles_per_byte_moved: float
    source: str


def _scaled(name: str, clock_hz: float, mac_speedup: float, source: str) -> DeviceProfile:
    general = _COREMARK_PER_MHZ["cortex-m4f"] / _COREMARK_PER_MHZ[name]
    return DeviceProfile(
        name,
        clock_hz,
        _M4F_CYCLES_PER_MAC / mac_speedup,
        _M4F_CYCLES_PER_OUTPUT * general,
        _M4F_CYCLES_PER_BYTE_MOVED * general,
        source,
    )


PROFILES = {
    "cortex-m4f": DeviceProfile(
        "cortex-m4f",
        120e6,
        _M4F_CYCLES_PER_MAC,
        _M4F_CYCLES_PER_OUTPUT,
        _M4F_CYCLES_PER_BYTE_MOVED,
        "fitted to the MLPerf Tiny v0.5 reference submission (NUCLEO-L4R5ZI, TFLite Micro, 120 MHz)",
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


def _elements(layer: dict) -> int:
    return layer["output_bytes"]  # int8 activations: one byte per element


def estimate(analysis: dict, profile: DeviceProfile) -> dict:
    """Estimated cycles and latency of the .tflite whose edgeq.analysis result is ANALYSIS, on PROFILE."""
    if analysis.get("format") != "tflite":
        raise ValueError("the MCU estimate prices TFLite Micro operators: analyse the .tflite")
    per_layer = []
    for layer in analysis["layers"]:
        if layer["kind"] in MAC_KINDS:
            cycles = profile.cycles_per_mac * layer["macs"] + profile.cycles_per_output * _elements(layer)
        else:
            cycles = profile.cycles_per_byte_moved * layer["output_bytes"]
        per_layer.append({"name": layer["name"], "op": layer["op"], "cycles": round(cycles)})
    total = sum(row["cycles"] for row in per_layer)
    return {
        "device": asdict(profile),
        "cycles": total,
        "latency_ms": total / profile.clock_hz * 1e3,
        "layers": per_layer,
        "note": "estimate from documented device profiles, not a measurement",
    }
