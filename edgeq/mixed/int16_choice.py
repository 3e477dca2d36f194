"""int16 activations chosen per tensor by measured error, for the TFLite targets of a transformer.

An int8 ``.tflite`` of a BERT-family encoder loses its function (all-MiniLM-L6-v2: mean cosine 0.72 to fp32): a
few channels of the residual stream, of the layer norms' inputs and of the feed-forward outputs hold values
hundreds of times the typical one, and one int8 scale over that range leaves the typical value a few steps.
TFLite's 16x8 kernels (int16 activations, int8 weights) hold such ranges, but a whole 16x8 model doubles the
arena and runs no operator in XNNPACK; so only the tensors that need the range get int16.

A tensor is *int16* when its unit (edgeq.mixed.tensor_units: its writer and every quantized node reading it)
computes in int16 (the layers table's "int16"): it is then stored in int16 and no reader reads an int8 copy.

1. **Local error.** On the first CHOICE_SAMPLES calibration samples, each candidate tensor's float values x in the
   float model, and its int8 encoding (scale s, zero point z) in the all-int8 build:
   ``r = E[(s * (clip(round(x / s) + z) - z) - x)^2] / E[x^2]``, the noise-to-signal ratio of storing it in int8.
2. **Order.** First the candidates whose int16 nodes include no product (MatMul, Gemm, Conv: PRODUCT_OPS), then
   the others, each group by r, largest first; mix(k) is the first k of them in int16. LiteRT runs no 16x8
   operator in XNNPACK, and its builtin 16x8 FULLY_CONNECTED is the costly one: on paraphrase-MiniLM-L3 the
   order by r alone gave a .tflite of 90 ms in LiteRT (1 thread), this order 50 ms at the same accuracy
   (the int8 .tflite 5.5 ms, uniform 16x8 134 ms; this AMD EPYC).
3. **Measure.** SQNR(k): the worst output SQNR against the float model, on the same samples, of mix(k)'s QDQ
   model as the pipeline builds it for the targets (one calibration serves every build). The target is
   ``SQNR(N) - MARGIN_DB``, N every candidate. If SQNR(0) meets it, int8 stays; else the smallest k that meets
   it is found by bisection over [0, N] (about log2 N builds). SQNR(k) is not strictly monotone in k, but both
   ends of the bisection's interval are measured builds, so the mix returned is one that was built and met the
   target.

Candidates are the tensor units of edgeq.mixed.tensor_units (a tensor, its writer and readers; no embedding
table goes int16). Ranges are min/max (``calib_method`` auto), as for
uniform int16 (edgeq.quantization.qparams.range_method): the int8 and int16 copies of a tensor share one range.

Measured (BENCHMARKS.md "Sentence encoders", AMD EPYC, mean / minimum cosine of 200 sentence embeddings to fp32's):
paraphrase-MiniLM-L3 0.9980 / 0.9968 with 72 of 122 tensors int16 (int8: 0.9776 / 0.9479), all-MiniLM-L6-v2
0.9976 / 0.9944 with 136 of 229 (int8: 0.7213 / 0.5469), files 0.25x fp32's as int8's; LiteRT runs them at
0.14x and 0.10x the float .tflite's speed (README "In TFLite").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgeq.data import CalibrationData
from edgeq.io.onnx_model import clone_model, model_bytes, to_proto
from edgeq.io.session import exposing, fixed_batch_size
from edgeq.mixed.tensor_units import tensor_units
from edgeq.mixed.workbench import run_model, worst_sqnr
from edgeq.pipeline import Pipeline, Quantized
from edgeq.quantization.qparams import ACTIVATION_TYPES, Encoding
from edgeq.quantization.recipe import Recipe

CHOICE_SAMPLES = 16
MARGIN_DB = 6.0  # how far below the all-int16 mix's SQNR the chosen mix may be (1 bit of the output's precision)
# ops whose 16x8 kernels LiteRT runs far slower than int8 ones (no XNNPACK): FULLY_CONNECTED, BATCH_MATMUL, CONV_2D
PRODUCT_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


@dataclass
class Int16Choice:
    """The chosen mix: its recipe (the layers table naming its int16 nodes), the QDQ model it was measured as, and
    what the report says of the choice."""

    recipe: Recipe
    quantized: Quantized
    report: dict = field(default_factory=dict)  # "tensors": the int16 tensors


def is_transformer(graph: ir.Graph) -> bool:
    """A preprocessed graph with layer norms and no convolutions: where int8 activations lose the function."""
    ops = {node.op_type for node in graph}
    return "LayerNormalization" in ops and not {"Conv", "ConvTranspose"} & ops


def choose_int16(model: ir.Model, data: CalibrationData, recipe: Recipe, *, progress: bool = False) -> Int16Choice:
    """The int16 tensors of MODEL (not changed) for RECIPE's 8-bit TFLite build, chosen on DATA (module
    docstring); the mix with none when int8 already meets the target."""
    start = time.perf_counter()
    recipe = recipe.updated(activation_type="int8", calib_method="minmax" if recipe.calib_method == "auto" else None)
    # int16 Q/DQ pairs need opset 21, which preprocessing raises to before it names the nodes: calibrate that graph
    calibrated = Pipeline(recipe.updated(activation_type="int16"), progress=progress).calibrate(
        clone_model(model), data
    )
    step = fixed_batch_size(calibrated.model) or 1  # the samples one run takes, where the graph fixes them
    feeds = data.head(max(step, min(CHOICE_SAMPLES, data.num_samples) // step * step))
    feeds = next(iter(feeds.batches(feeds.num_samples)))
    reference = run_model(calibrated.model, feeds)
    units = tensor_units(calibrated.plan)
    scores: dict[int, float] = {}  # k -> SQNR(k)
    models: dict[int, Quantized] = {}  # the builds that may be returned (a transformer's QDQ model is large)
    ordered: list[str] = []  # the candidates in their order (set after the int8 build)

    def measured(k: int) -> float:
        if k not in scores:
            nodes = sorted({name for tensor in ordered[:k] for name in units[tensor]})
            models[k] = Pipeline(_with_int16(recipe, nodes), progress=False).quantize(calibrated, "int8")
            scores[k] = worst_sqnr(reference, run_model(model_bytes(models[k].model), feeds))
        return scores[k]

    int8_sqnr = measured(0)
    encodings = models[0].report["encodings"]
    ratios = _noise_ratios(calibrated.model, [t for t in units if t in encodings], encodings, feeds, step)
    by_name = {node.name: node for node in calibrated.plan.quantized}
    products = {t: any(by_name[n].op_type in PRODUCT_OPS for n in units[t]) for t in ratios}
    ordered = sorted(ratios, key=lambda t: (products[t], -ratios[t]))
    target = measured(len(ordered)) - MARGIN_DB
    low, high = 0, len(ordered)  # measured(low) misses the target (unless low is 0 and int8 meets it), high meets it
    if int8_sqnr >= target:
        high = 0
    while True:
        for k in [k for k in models if k != high]:
            del models[k]
        if high - low <= 1:
            break
        middle = (low + high) // 2
        low, high = (low, middle) if measured(middle) >= target else (middle, high)
    chosen = ordered[:high]
    nodes = sorted({name for tensor in chosen for name in units[tensor]})
    quantized, sqnr = models[high], scores[high]
    report = {
        "candidates": len(ordered),
        "int16_tensors": len(chosen),
        "int16_nodes": len(nodes),
        "samples": len(reference[0]),
        "target_db": round(target, 2),
        "sqnr_db": {str(k): round(v, 2) for k, v in sorted(scores.items())},
        "chosen_sqnr_db": round(sqnr, 2),
        "seconds": round(time.perf_counter() - start, 1),
        "tensors": chosen,
    }
    quantized.report["int16_choice"] = report  # the TFLite targets' reports carry the QDQ model's
    return Int16Choice(_with_int16(recipe, nodes), quantized, report)


def _with_int16(recipe: Recipe, nodes: list[str]) -> Recipe:
    """RECIPE with NODES int16 (escaped: a node name is matched as a whole, never as a pattern)."""
    return recipe.updated(layers={**{re.escape(name): "int16" for name in nodes}, **recipe.layers})


def _noise_ratios(
    model: ir.Model, names: list[str], encodings: dict[str, dict], feeds: dict[str, np.ndarray], step: int
) -> dict[str, float]:
    """Tensor -> E[(int8 round trip - x)^2] / E[x^2] of its float values on FEEDS, at its ENCODINGS (a report's:
    name -> scale and zero point), run STEP samples at a time."""
    if not names:  # onnxruntime would return every graph output for none
        return {}
    runner = exposing(to_proto(model), names)
    int8 = ACTIVATION_TYPES["int8"]
    noise = dict.fromkeys(names, 0.0)
    signal = dict.fromkeys(names, 0.0)
    samples = len(next(iter(feeds.values())))
    for start in range(0, samples, step):  # few samples a run: every candidate tensor is an output of the run
        outputs = runner.run(names, {k: v[start : start + step] for k, v in feeds.items()})
        for name, x in zip(names, outputs, strict=True):
            encoding = Encoding(np.float32(encodings[name]["scale"]), encodings[name]["zero_point"], int8)
            x = np.asarray(x, np.float64)
            back = (encoding.quantize(x).astype(np.float64) - encoding.zero_point) * float(encoding.scale)
            noise[name] += float(np.sum((back - x) ** 2))
            signal[name] += float(np.sum(x * x))
    return {name: noise[name] / signal[name] if signal[name] else 0.0 for name in names}
