"""A cheap second-order ranking of the layers: the Hessian trace of the output error, by Hutchinson's estimator.

For a layer with weights w (n of them) and the network output f(w) on the samples, take the loss of a weight change

    L(w) = || f(w) - f(w0) ||^2        (summed over outputs and samples, divided by the number of samples)

At w0 the residual f(w0) - f(w0) is 0, so the Gauss-Newton term is the whole Hessian: H = 2 J^T J, J = df/dw at w0.
Hutchinson: for a random v with E[v v^T] = I (Rademacher: each entry +1 or -1),

    tr(J^T J) = E_v[ v^T J^T J v ] = E_v || J v ||^2,

and J v is a directional derivative, which forward passes alone give: J v ~ (f(w0 + eps v) - f(w0 - eps v)) / 2 eps
(central difference: exact for a layer the output depends on linearly, second-order accurate otherwise). With K
probes the estimate is the mean of K values ||J v_k||^2 and its standard error their standard deviation / sqrt(K);
for a quadratic form A = J^T J the variance of one Rademacher probe is 2 sum_{i != j} A_ij^2.

HAWQ-V2 ranks a layer at precision p by Omega_p = tr(H) / n * || Q_p(W) - W ||^2: the average curvature times the
squared size of the weight change p makes (0 for float). It needs no quantized model run, only 2K float runs per
layer; edgeq.mixed.sensitivity measures the real SQNR too and reports how well Omega ranks the layers (Spearman).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from edgeq.io.onnx_model import clone_model, model_bytes
from edgeq.io.session import session, session_batch
from edgeq.measure.metrics import float_pairs
from edgeq.quantization.plan import WEIGHT_INPUT
from edgeq.scale.tasks import task_threads

PROBE_INPUT = "edgeq.probed_weight"
RELATIVE_STEP = 1e-2  # eps as a fraction of the layer's RMS weight: far above float32 rounding, locally linear


def hutchinson_trace(
    outputs: Callable[[np.ndarray], list[np.ndarray]], w0: np.ndarray, *, probes: int, eps: float, seed: int = 0
) -> tuple[float, float]:
    """(estimate of tr(J^T J), its standard error) for J the Jacobian of OUTPUTS (weights -> float arrays) at W0."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(probes):
        v = rng.choice(np.array([-1.0, 1.0], np.float32), size=w0.shape)
        plus, minus = outputs(w0 + eps * v), outputs(w0 - eps * v)
        values.append(sum(float(np.sum(((p.astype(np.float64) - m) / (2 * eps)) ** 2)) for p, m in zip(plus, minus, strict=True)))
    values = np.asarray(values)
    error = float(values.std(ddof=1) / np.sqrt(probes)) if probes > 1 else float("nan")
    return float(values.mean()), error


def probe_model(float_model: ir.Model, name: str) -> tuple[bytes, np.ndarray]:
    """A copy of FLOAT_MODEL whose layer NAME reads its weight from the graph input PROBE_INPUT (Gemm's alpha
    folded into it), and that weight."""
    model = clone_model(float_model)
    node = next(n for n in model.graph if n.name == name)
    index = WEIGHT_INPUT[node.op_type]
    w = node.inputs[index].const_value.numpy().astype(np.float32)
    if node.op_type == "Gemm":
        w = w * node.attributes.get_float("alpha", 1.0)
        node.attributes.pop("alpha", None)
    probe = ir.Value(name=PROBE_INPUT, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(w.shape))
    model.graph.inputs.append(probe)
    node.replace_input_with(index, probe)
    return model_bytes(model), w


def layer_trace(item: tuple[bytes, np.ndarray, int], shared: dict) -> dict:
    """Hutchinson's tr(H) / n of one layer, a map_tasks call: ITEM (probe model bytes, weight, seed), SHARED
    {"feeds": the samples, "probes": K}."""
    model, w0, seed = item
    feeds, probes = shared["feeds"], shared["probes"]
    runner = session(model, threads=task_threads())
    names = [o.name for o in runner.get_outputs()]
    samples = len(next(iter(feeds.values())))
    step = session_batch(runner) or samples  # a batch preprocessing fixed: that many samples a run

    def outputs(w: np.ndarray) -> list[np.ndarray]:
        weight = {PROBE_INPUT: w.astype(np.float32)}
        parts = [
            runner.run(names, {**{k: v[s : s + step] for k, v in feeds.items()}, **weight})
            for s in range(0, samples, step)
        ]
        result = [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]
        return [t for _, t in float_pairs(result, result)]

    eps = RELATIVE_STEP * float(np.sqrt(np.mean(w0.astype(np.float64) ** 2)) or 1.0)
    trace, error = hutchinson_trace(outputs, w0, probes=probes, eps=eps, seed=seed)
    # H = 2 J^T J; per sample, per weight
    return {"trace_per_weight": 2 * trace / samples / w0.size, "relative_error": error / trace if trace else None}
