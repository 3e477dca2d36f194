"""This machine's CPU, as far as edgeq's choices depend on it: whether its int8 dot-product instructions add u8 x s8
products exactly.

x86 CPUs with VNNI (AVX-512 VNNI or AVX-VNNI: VPDPBUSD) and ARM64 CPUs (SDOT/UDOT) accumulate each product in
int32, so ONNX Runtime's default int8 kernels are exact there. x86 CPUs with AVX2 only add pairs of products into a
saturating int16 (VPMADDUBSW): exact only for bounded weights, or with ONNX Runtime's slower exact kernels
(edgeq.quantization.cpus, edgeq.io.session). An x86 machine whose flags cannot be read counts as without VNNI.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

VNNI_FLAGS = {"avx512_vnni", "avx_vnni"}


def is_arm64() -> bool:
    return platform.machine().lower() in ("arm64", "aarch64")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags Linux lists for the first CPU (empty where it lists none)."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


def exact_int8_dot_products(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU's int8 dot products accumulate every u8 x s8 product exactly (VNNI, ARM64 dot products)."""
    return is_arm64() or bool(cpu_flags(cpuinfo) & VNNI_FLAGS)


@functools.cache
def this_cpu_exact_int8() -> bool:
    """``exact_int8_dot_products()`` of this machine, read once (every ONNX Runtime session asks)."""
    return exact_int8_dot_products()
