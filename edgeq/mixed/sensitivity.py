"""Per-layer sensitivity: the output SQNR when only one layer changes precision, and HAWQ-V2's Omega beside it.

For every weighted layer l of the base build (edgeq.mixed.layers) and every candidate precision p, the variant
where only l is at p (``with_choices``: an edit of the base QDQ model, no rebuild) runs on the measurement samples,
and its worst output SQNR against the float model is S[l, p] (S[l, base] is the base build's). One task per
(layer, precision) through edgeq.scale.tasks.map_tasks: Ray tasks when Ray is installed, else a serial loop,
with the same results.

Noise powers add: with e_l the output error layer l's quantization causes and the errors of different layers
uncorrelated, || sum_l e_l ||^2 ~ sum_l || e_l ||^2. Relative to the signal power, layer l at p adds

    n[l, p] = 10^(-S[l, p] / 10) - 10^(-S_base / 10)

to the base build's noise (negative for a precision finer than the base), which is the cost
edgeq.mixed.allocation minimizes and the order in which edgeq.mixed.accuracy_aware reverts layers.

The second-order ranking (edgeq.mixed.hessian): Omega[l, p] = tr(H_l) / n_l * || Q_p(W_l) - W_l ||^2, from 2K
float runs per layer; ``spearman`` is the rank correlation of Omega[., int4] with the measured int4 loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgeq.errors import RecipeError
from edgeq.io.onnx_model import model_bytes
from edgeq.mixed.hessian import layer_trace, probe_model
from edgeq.mixed.layers import (
    PRECISION_BITS,
    Layer,
    dequantized_weight,
    float_weight,
    requantized_weight,
    weight_bytes,
    weighted_layers,
    with_choices,
)
from edgeq.mixed.workbench import Workbench, run_model, worst_sqnr
from edgeq.quantization.recipe import Recipe
from edgeq.scale.tasks import map_tasks

HESSIAN_SAMPLES = 8
PROBES = 8


def noise_power(sqnr: float) -> float:
    """Noise power relative to the signal's for an SQNR in dB."""
    return 0.0 if sqnr == math.inf else 10.0 ** (-sqnr / 10.0)


@dataclass
class SensitivityTable:
    """Per layer: op, weights, the worst output SQNR (dB) and weight bytes at each precision, Omega."""

    layers: list[Layer]
    precisions: tuple[str, ...]
    base_precision: str
    base_sqnr_db: float
    sqnr_db: dict[str, dict[str, float]]  # layer -> precision -> dB
    omega: dict[str, dict[str, float]]  # layer -> precision -> Omega
    hessian_trace: dict[str, float]  # layer -> tr(H) / n
    hessian_error: dict[str, float | None]  # layer -> the estimate's relative standard error
    samples: int
    seconds: dict[str, float] = field(default_factory=dict)

    def added_noise(self, layer: str, precision: str) -> float:
        """n[l, p]: the output noise power (relative to the signal) layer LAYER at PRECISION adds to the base."""
        return noise_power(self.sqnr_db[layer][precision]) - noise_power(self.base_sqnr_db)

    def bytes(self, layer: Layer, precision: str, packed_int4: bool = True) -> int:
        return weight_bytes(layer.params, precision, packed_int4)

    def spearman(self, precision: str = "int4") -> float | None:
        """Rank correlation of Omega at PRECISION with the measured SQNR loss of PRECISION against the finest
        precision measured (float, else int8); None where it is undefined (fewer than 3 layers, a constant)."""
        from scipy.stats import spearmanr

        finest = next((p for p in ("float", "int8") if p in self.precisions), None)
        if precision not in self.precisions or finest in (None, precision) or len(self.layers) < 3:
            return None
        omega = [self.omega[layer.name][precision] for layer in self.layers]
        loss = [self.sqnr_db[layer.name][finest] - self.sqnr_db[layer.name][precision] for layer in self.layers]
        if len(set(omega)) < 2 or len(set(loss)) < 2 or not all(map(math.isfinite, loss)):
            return None
        return round(float(spearmanr(omega, loss).statistic), 3)

    def rows(self) -> list[dict]:
        return [
            {
                **layer.to_dict(),
                "sqnr_db": {p: _rounded(self.sqnr_db[layer.name][p]) for p in self.precisions},
                "weight_bytes": {p: self.bytes(layer, p) for p in self.precisions},
                "omega": {p: float(f"{self.omega[layer.name][p]:.4g}") for p in self.precisions},
                "hessian_trace_per_weight": float(f"{self.hessian_trace[layer.name]:.4g}"),
                "hessian_relative_error": _rounded(self.hessian_error[layer.name]),
            }
            for layer in self.layers
        ]

    def to_dict(self) -> dict:
        return {
            "base_precision": self.base_precision,
            "base_sqnr_db": _rounded(self.base_sqnr_db),
            "samples": self.samples,
            "precisions": list(self.precisions),
            "layers": self.rows(),
            "spearman_omega_vs_sqnr_loss": self.spearman(),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _rounded(value: float | None) -> float | str | None:
    return value if value is None else round(value, 3) if math.isfinite(value) else str(value)


# One task worker keeps the models of the latest sweep deserialized: a sweep's tasks share them.
_WORKER_CACHE: dict[str, tuple] = {}


def _variant_sqnr(item: tuple[str, str], shared: dict) -> float:
    """The worst output SQNR of the base model with the layer and precision of ITEM, a map_tasks call; SHARED
    holds the models (serialized), the recipe, the samples and the float outputs."""
    layer, precision = item
    key = shared["key"]
    if key not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = (
            ir.serde.deserialize_model(_proto(shared["base"])),
            ir.serde.deserialize_model(_proto(shared["float"])),
        )
    base, float_model = _WORKER_CACHE[key]
    variant = with_choices(base, float_model, {layer: precision}, Recipe(**shared["recipe"]))
    return worst_sqnr(shared["reference"], run_model(variant, shared["feeds"]))


def _proto(data: bytes):
    import onnx

    return onnx.ModelProto.FromString(data)


def measure_sensitivity(
    bench: Workbench,
    precisions: tuple[str, ...] = ("float", "int8", "int4"),
    *,
    samples: int | None = None,
    probes: int = PROBES,
    hessian_samples: int = HESSIAN_SAMPLES,
    address: str | None = None,
    progress: bool = False,
) -> SensitivityTable:
    """The sensitivity table of BENCH's base build at PRECISIONS, on the first SAMPLES of its samples (default:
    all); tasks on the Ray cluster at ADDRESS (None: a local Ray instance when Ray is installed, "serial": no
    Ray)."""
    layers = weighted_layers(bench.base)
    if not layers:
        raise RecipeError(
            "the model has no Conv, ConvTranspose, Gemm or MatMul with a constant weight that the recipe quantizes: "
            "there is no layer precision to choose"
        )
    base = bench.base_precision
    precisions = tuple(dict.fromkeys([*precisions, base]))
    feeds = {name: array[:samples] for name, array in bench.feeds.items()}
    reference = [array[:samples] for array in bench.reference]
    base_sqnr = worst_sqnr(reference, run_model(bench.base, feeds))
    start = time.perf_counter()
    shared = {
        "key": f"{id(bench)}-{time.time_ns()}",
        "base": model_bytes(bench.base),
        "float": model_bytes(bench.calibrated.model),
        "recipe": bench.recipe.to_dict(),
        "feeds": feeds,
        "reference": reference,
    }
    jobs = [(layer.name, p) for layer in layers for p in precisions if p != base]
    measured = map_tasks(
        _variant_sqnr, jobs, address=address, progress=progress, description="per-layer sensitivity", shared=shared
    )
    sqnr = {layer.name: {base: base_sqnr} for layer in layers}
    for (name, precision), value in zip(jobs, measured, strict=True):
        sqnr[name][precision] = value
    seconds = {"sqnr": time.perf_counter() - start}

    start = time.perf_counter()
    head = {k: v[:hessian_samples] for k, v in feeds.items()}
    probe_items = [(*probe_model(bench.calibrated.model, layer.name), i) for i, layer in enumerate(layers)]
    traces = map_tasks(
        layer_trace, probe_items, address=address, progress=progress, description="Hessian traces",
        shared={"feeds": head, "probes": probes},
    )  # fmt: skip
    seconds["hessian"] = time.perf_counter() - start
    trace = {layer.name: t["trace_per_weight"] for layer, t in zip(layers, traces, strict=True)}
    error = {layer.name: t["relative_error"] for layer, t in zip(layers, traces, strict=True)}
    omega = {layer.name: _omegas(bench, layer, precisions, trace[layer.name]) for layer in layers}
    return SensitivityTable(
        layers, precisions, base, base_sqnr, sqnr, omega, trace, error, len(next(iter(feeds.values()))), seconds
    )


def _omegas(bench: Workbench, layer: Layer, precisions: tuple[str, ...], trace: float) -> dict[str, float]:
    """Omega[l, p] = tr(H) / n * ||Q_p(W) - W||^2 for each precision (0 for float)."""
    w = float_weight(bench.calibrated.model, layer.name)
    result = {}
    for precision in precisions:
        if precision == "float":
            result[precision] = 0.0
            continue
        if precision == bench.base_precision:
            quantized = dequantized_weight(bench.base, layer.name)
        else:
            bits = PRECISION_BITS[precision]
            quantized = requantized_weight(bench.base, bench.calibrated.model, layer.name, bits, bench.recipe)
        error = quantized - w
        result[precision] = trace * float(np.sum(error.astype(np.float64) ** 2))
    return result
