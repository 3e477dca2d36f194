"""Is the QDQ artifact faster than its fp32 model? Measured at conversion, on this machine, when it is the CPU
the artifact was built for.

The two models run alternately in one process (edgeq.measure.latency.alternate: rounds of a few runs of each, the
median over rounds of the ratio of mean latencies), batch 1 of the first evaluation sample, 1 thread: the
deployment case where int8 has the least to gain, and the one users measure. Both run on ONNX Runtime's default
kernels, as a deployment does: the weights chosen for the CPU keep them exact (edgeq.quantization.cpus).

Slower than fp32 is not left silent: the report gets a note with the reason it can name (ops ONNX Runtime left in
float between a DequantizeLinear and a QuantizeLinear, targets/onnxruntime/fusion.py; a model so small that
per-node overhead outweighs the arithmetic; else the CPU's int8 kernels) and what to deploy instead.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from edgeq.measure.latency import alternate
from edgeq.quantization.cpus import Cpu
from edgeq.targets.onnxruntime.fusion import sandwiches_text
from edgeq.targets.onnxruntime.profile import runner

RUNS = 30  # per model: 10 rounds of 3 runs; under a second on MobileNetV2
WARMUP = 3
SMALL_MODEL_MS = 1.0  # fp32 latency under which per-node overhead decides int8 vs float


def measure_speed(float_path: Path, artifact: Path, feeds: dict[str, np.ndarray]) -> dict:
    """fp32 and artifact median ms at 1 thread and the speedup (median over rounds of fp32 / artifact)."""

    def make(path: Path):
        return partial(runner, path, inputs=feeds, exact_int8=False)

    result = alternate(
        str(artifact), make(artifact), str(float_path), make(float_path), threads=[1], runs=RUNS, warmup=WARMUP
    )
    row = result["rows"][0]
    return {
        "threads": 1,
        "batch": 1,
        "fp32_ms": round(row["b_ms"]["p50"], 4),
        "artifact_ms": round(row["a_ms"]["p50"], 4),
        "speedup": round(1.0 / row["ratio"], 3),
    }


def slower_note(speed: dict, fusion: dict, cpu: Cpu, activation_type: str = "int8") -> str | None:
    """Why the artifact is slower than fp32 and what to deploy instead, or None when it is not."""
    if speed["speedup"] >= 1.0:
        return None
    if activation_type == "int16":
        return (
            f"the int16 artifact runs at {speed['speedup']:.2f}x the fp32 model's speed: ONNX Runtime has no int16 "
            "kernels, so every quantized op runs in float between DequantizeLinear and QuantizeLinear. int16 "
            "activations buy accuracy (and the 16x8 .tflite), not ONNX Runtime speed"
        )
    reasons = []
    if fusion["sandwiches"]:
        reasons.append(
            f"ONNX Runtime runs {sum(fusion['sandwiches'].values())} op(s) in float between DequantizeLinear and "
            f"QuantizeLinear ({sandwiches_text(fusion['sandwiches'])})"
        )
    if speed["fp32_ms"] < SMALL_MODEL_MS:
        reasons.append(
            f"the model is small (fp32 {speed['fp32_ms']:.3f} ms): per-node overhead outweighs what int8 saves"
        )
    reason = "; ".join(reasons) or f"{cpu.description}: ONNX Runtime's int8 kernels are not faster here"
    return (
        f"the {activation_type} artifact runs at {speed['speedup']:.2f}x the fp32 model's speed on this CPU ({cpu.name}, "
        f"1 thread, batch 1): {reason}. Where latency matters more than size, deploy the fp32 model (or keep "
        "the slow layers float with --exclude)"
    )
