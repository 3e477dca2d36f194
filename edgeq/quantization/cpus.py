"""Deployment CPUs: what ONNX Runtime's integer kernels do on each, and so how to quantize for it.

A QDQ model runs fast in ONNX Runtime only as its fused integer kernels (QLinearConv, QGemm, QLinearMatMul,
...), which multiply uint8 activations by int8 weights (u8s8) through MLAS. How MLAS multiplies depends on the
CPU (docs/runtimes.md §5.4 and §5.6 give the sources and the measurements):

* ``x86-vnni`` (AVX-512 VNNI or AVX-VNNI: Intel Cascade Lake and later, Alder Lake, AMD Zen 4 and later):
  VPDPBUSD accumulates u8 x s8 products in int32, exactly. 8-bit weights.
* ``x86-avx2`` (x86 without VNNI: AMD Zen 1-3, Intel before Cascade Lake): VPMADDUBSW adds each pair of u8 x s8
  products into a saturating int16, so two products of 255 x 127 overflow it. ONNX Runtime's exact kernels for
  these CPUs (``session.x64quantprecision = 1``) are slower than fp32 on MobileNetV2. A pair cannot overflow when
  its weights add up to at most 128 in magnitude (255 x 128 = 32640 < 32767): in the layers that run as u8s8
  GEMMs (``runs_as_gemm``) no two weights of a channel may exceed that together (edgeq.quantization.weight_pairs),
  and the default kernels are then exact and fast. Depthwise convolutions keep full 8-bit weights: their kernel
  does not sum pairs in int16 (measured: the same outputs with either kernel setting, docs/runtimes.md §5.6).
* ``arm64`` (NEON with the dot-product instructions): SDOT/UDOT accumulate in int32, exactly. 8-bit weights.

``auto`` is the machine edgeq runs on (``host_cpu``), for a model built where it is deployed; build machines
often are not, hence ``--cpu``.

Each CPU also names the activation type ``edgeq quantize`` picks for it by default: uint8 on x86 (MLAS's u8s8
kernels are its native ones; int8 activations ran MobileNetV2 at 1.05x fp32 against uint8's 1.72x on an
AVX-512 VNNI Xeon, and ORT's own s8s8 model at 1.13x against u8s8's 1.87x), int8 on ARM64 (SDOT takes s8 x s8
directly, and int8 is what TFLite wants). ``edgeq convert --target onnxruntime`` measures instead: it builds both
and keeps the one ONNX Runtime fuses more of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeq.io.host import exact_int8_dot_products, is_arm64
from edgeq.quantization.weight_pairs import PAIR_LIMIT


@dataclass(frozen=True)
class Cpu:
    name: str
    description: str
    gemm_pair_limit: int | None  # the bound on |w_i| + |w_j| in a channel of a layer run as a u8s8 GEMM
    why: str  # why that bound (or none), for the report
    # the activation type ONNX Runtime's int8 kernels run fastest on it (``edgeq quantize``'s "auto")
    activation_type: str = "uint8"

    def pair_limit(self, weight_bits: int) -> int | None:
        """The bound for weights of WEIGHT_BITS: 4-bit pairs (at most 14) are within any."""
        return self.gemm_pair_limit if weight_bits == 8 else None


CPUS = {
    cpu.name: cpu
    for cpu in (
        Cpu("x86-vnni", "x86 with AVX-512 VNNI or AVX-VNNI", None, "VNNI accumulates u8 x s8 products exactly"),
        Cpu(
            "x86-avx2",
            "x86 without VNNI (AVX2)",
            PAIR_LIMIT,
            "without VNNI ONNX Runtime's fast u8s8 kernels add pairs of products into a saturating int16: exact "
            f"only when two weights of a channel add up to at most {PAIR_LIMIT}; its exact kernels "
            "(session.x64quantprecision=1) are slower than fp32",
        ),
        Cpu(
            "arm64", "ARM64 with NEON dot-product instructions", None, "SDOT/UDOT accumulate int8 products exactly",
            "int8",
        ),
    )
}
CPU_CHOICES = ("auto", *CPUS)


def runs_as_gemm(op_type: str, weight_shape: tuple[int, ...]) -> bool:
    """Does ONNX Runtime multiply this layer as a u8s8 GEMM? Every MatMul and Gemm, and convolutions with more
    than one input channel per group (a depthwise one has its own kernel; ConvTranspose has no integer kernel)."""
    return op_type in ("MatMul", "Gemm") or (op_type == "Conv" and weight_shape[1] > 1)


def host_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """The CPU profile of this machine (edgeq.io.host: an x86 machine whose flags cannot be read counts as
    without VNNI, so its artifacts are exact everywhere)."""
    if is_arm64():
        return CPUS["arm64"]
    return CPUS["x86-vnni"] if exact_int8_dot_products(cpuinfo) else CPUS["x86-avx2"]


def resolve_cpu(name: str) -> Cpu:
    """The profile for a recipe's ``cpu`` (auto: this machine)."""
    return host_cpu() if name == "auto" else CPUS[name]
