"""AdaRound: learn, per weight, whether to round up or down (Nagel et al. 2020, "Up or Down? Adaptive Rounding
for Post-Training Quantization", ICML 2020).

Rounding each weight to nearest minimizes each weight's own error, not the layer's output error. AdaRound keeps
the grid (the weight scales s are unchanged) and learns, layer by layer, a continuous variable V per weight:

    W~ = s * clip(floor(W / s) + h(V), qmin, qmax),   h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)

with zeta = 1.1, gamma = -0.1 (the rectified sigmoid reaches 0 and 1 exactly), minimizing with Adam

    mean over rows x of || f(W x_f + b) - f(W~ x_q + b) ||^2  +  lambda * sum (1 - |2 h(V) - 1|^beta)

where x_q is the layer's input in the QDQ model (what the quantized network really feeds it) and x_f its input
in the float model as the QDQ model clips it: the paper's "asymmetric reconstruction"
(section 5), so the rounding also absorbs part of the error that the quantized inputs bring. f is what the next
layers see of the output: the fused activation (Relu/Clip, and the per-channel bound Min(Relu(z), h / s_i) that
equalization makes of a Relu6) and the clip to the output's encoding. The regularizer is
off for the first 20% of the iterations, then beta is annealed linearly from 20 to 2, which drives every h(V) to
0 or 1. V starts where h(V) is W/s's fractional part (the loss starts at the unrounded weights); at the end the
weights are rounded hard, q = clip(floor(W / s) + [h(V) >= 0.5], qmin, qmax): the same integer grid and scales.
The paper runs 10k-20k Adam steps (lr 1e-3, lambda 0.01); with 1000 steps, lr 0.03 and lambda 0.001 reached
lower held-out errors on MobileNetV2's layers (e.g. its 960->320 projection at 4 bits: 0.060 -> 0.0105 relative
error, against 0.021 with lr 1e-3 and 0.015 with lr 0.03, lambda 0.01).

How edgeq applies it:
* Layers: every quantized Conv (grouped and depthwise too), Gemm and 2-D MatMul whose weight is the constant
  ``<node>.weight_quantized``, in topological order. A layer is a batch of G independent matrix products (G conv
  groups; 1 for Gemm/MatMul): rows x [G, R, K/G] times weights [G, K/G, Cout/G].
* Rows: the layer's im2col rows (one kernel-sized input patch per output position) at a few random positions per
  calibration sample, ``samples`` rows per layer in all (fewer if they would exceed ``memory_mb``), so memory
  and time do not grow with the image size.
* Sequential: for each layer, the QDQ model, with the rounding already learned upstream, and its clipped float
  reference (below) run in onnxruntime, layer by layer (passes.layer_sequence: only the nodes between a cached cut
  and the layer's input run, so collecting every layer's rows costs about two runs of each model, not a run of
  the model's prefix per layer, which is quadratic in depth). Both halves of that matter (4-bit
  digits CNN, held-out logits SQNR; default sum-preserving rounding 15.4 dB): the target on the same quantized
  input (symmetric) with every layer's input from one run gives 14.3 dB, symmetric and sequential 16.3 dB,
  asymmetric and sequential 23.8 dB. Asymmetric from one run is a trap: each layer compensates the error of
  the upstream layers' old rounding, which they remove themselves (MobileNetV2 W4A8: 4.3 -> -7.6 dB).
* What the target is matters more than the optimizer. Percentile calibration clips rare large activations on
  purpose; against the plain float model, the loss of a layer after such a tensor is dominated by outliers that
  no rounding can restore (the QDQ model clipped them upstream, or its output clip or a Relu6 downstream removes
  them), and lowering it moves the rounding in directions that matter downstream. So x_f comes from the float
  model with every activation Q/DQ pair replaced by a Clip to its range (bias_correction's reference: float
  weights, the QDQ model's clipping), and both sides of the loss are clipped to the output's range. MobileNetV2,
  per-channel W8A8 after equalization (32 calibration views, 128 evaluation views, 150 steps or 0.5 s per layer;
  logits SQNR against the float model): round to nearest 15.3 dB; AdaRound against the plain float model 14.0 dB
  (its 960->160 projection in block 16 alone: 15.3 -> 11.5 dB, although its held-out layer error fell
  0.64 -> 0.60: the error is the clipped outliers); against the clipped reference 18.4 dB (18.3 dB without
  the output clip; 18.6 dB with bias correction after it; bias correction alone 18.0 dB).
* Work: ``iterations`` Adam steps of 256 rows per layer, never a time bound, so that the result is the same on
  a busy and an idle machine (the same seed, data and model give the same bytes).
* Safeguard: every fifth calibration sample is held out of the optimization; the learned rounding replaces the
  existing one only if it lowers the reconstruction error on the held-out rows (a Gemm sees one row per sample and
  can overfit a few dozen samples). ``report`` lists both errors for every layer.
* The bias is left as it is (the float bias is used on both sides of the loss); correcting the mean shift is the
  bias correction pass's job.

Pipeline stage (passes.stage): phase "quantized", when the recipe lists "adaround", with the recipe's weight bits,
against the calibrated float model on the calibration data (the torch extra is needed).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from edgeq.data import CalibrationData
from edgeq.errors import EdgeqError
from edgeq.passes.adaround_layers import Layer, layer_of, unsupported
from edgeq.passes.clipped_reference import clipped_reference
from edgeq.passes.layer_sequence import LayerSequence, input_batches
from edgeq.passes.stage import StageContext, StageResult
from edgeq.quantization.layer_precision import LayerPrecisions
from edgeq.quantization.qparams import weight_qmax

PHASE = "quantized"
ZETA, GAMMA = 1.1, -0.1
REGULARIZATION = 0.001  # lambda
BETA_START, BETA_END = 20.0, 2.0
WARM_UP = 0.2
LEARNING_RATE = 0.03
BATCH_ROWS = 256
ROWS_PER_INPUT = 8  # a minibatch holds at most 8 rows per input of an output (72 for a depthwise 3x3 channel)
HELD_OUT_EVERY = 5


def _import_torch():
    try:
        import torch
    except ImportError:
        raise EdgeqError("AdaRound needs PyTorch: pip install 'edgeq[torch]'") from None
    return torch


@dataclass
class AdaRoundResult(StageResult):
    """``layers`` maps each layer to its held-out relative reconstruction error ||y - y~||^2 / ||y||^2 before and
    after, whether the new rounding was adopted, the iterations, seconds and rows the optimization used and the
    seconds spent running the models for its rows; ``skipped`` maps quantized layers AdaRound cannot handle to
    the reason."""

    layers: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "layers": len(self.layers),
            "adopted": sum(bool(row["adopted"]) for row in self.layers.values()),
            "skipped": dict(self.skipped),
            "seconds": round(sum(row["seconds"] + row.get("data_seconds", 0.0) for row in self.layers.values()), 1),
        }


def stage(context: StageContext) -> AdaRoundPass | None:
    if "adaround" not in context.recipe.passes:
        return None
    return AdaRoundPass(
        context.float_model,
        context.data,
        weight_bits=context.recipe.weight_bits,
        layer_precisions=LayerPrecisions(context.recipe.layers),
        progress=context.progress,
    )


class AdaRoundPass(ir.passes.InPlacePass):
    """Re-round the integer weights of a QDQ model's layers to minimize their output error.

    FLOAT_MODEL is the (preprocessed) float model the QDQ model was built from; its nodes have the QDQ model's
    node names.
    """

    def __init__(
        self,
        float_model: ir.Model,
        data: CalibrationData,
        *,
        weight_bits: int = 8,
        layer_precisions: LayerPrecisions | None = None,
        iterations: int = 500,
        samples: int = 2048,
        memory_mb: int = 256,
        progress: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        self.float_model = float_model
        self.data = data
        self.weight_bits = weight_bits
        self.layer_precisions = layer_precisions or LayerPrecisions()
        self.iterations = iterations
        self.samples = samples
        self.memory_bytes = memory_mb * 2**20
        self.progress = progress
        self.seed = seed

    def call(self, model: ir.Model) -> AdaRoundResult:
        torch = _import_torch()
        layers, skipped = self._layers(model)
        self.result = AdaRoundResult(model, False, skipped=skipped)
        batches = input_batches(self.data, self.float_model)
        num_samples = sum(len(array) for array in next(iter(batches.values())))
        # Both models run layer by layer (passes.layer_sequence), in the same waves: the QDQ model with the
        # rounding already learned upstream, for x_q; its clipped reference, for x_f. With all optimizations
        # a QDQ model runs its integer kernels (3x faster than the float simulation for MobileNetV2, and what
        # the ONNX Runtime target runs); the tensors a wave reads are graph outputs, never fused away.
        names = [layer.node.name for layer in layers]
        quantized = LayerSequence(model, names, batches, optimization="all")
        # The targets come from the float model as the QDQ model clips it (float weights, every activation
        # Q/DQ pair a Clip to its range): rounding cannot restore what the activation encodings clip away on
        # purpose, and chasing those outliers costs the inputs that are represented (bias_correction.py).
        clipped = LayerSequence(clipped_reference(model, self.float_model), names, batches, optimization="all")
        index = {name: i for i, name in enumerate(names)}
        threads = torch.get_num_threads()
        # Each Adam step is a handful of small tensor ops: one thread avoids a thread-pool barrier per op, which
        # costs more than the ops themselves (11 ms instead of 30 us for a 45k-element add on a busy 2-core box).
        torch.set_num_threads(1)
        try:
            with tqdm(
                total=len(layers), desc="adaround", unit="layer", disable=None if self.progress else True, leave=False
            ) as bar:
                while quantized.pending:
                    wave = quantized.next_wave()
                    start = time.perf_counter()
                    wave_layers = [(index[name], layers[index[name]]) for name in wave]
                    rows = self._collect(wave_layers, quantized, clipped, num_samples)
                    data_seconds = (time.perf_counter() - start) / len(wave)  # one run serves the wave
                    for row in rows:
                        arrays = row.arrays()
                        train, inputs = int((~arrays[2]).sum()), arrays[0].shape[2]
                        if train < inputs:  # underdetermined: any rounding fits the rows, none generalizes
                            self.result.skipped[row.layer.node.name] = (
                                f"{train} calibration rows for {inputs} inputs per output: too few to learn its "
                                "rounding from (give more calibration samples)"
                            )
                            continue
                        self._round(torch, row.layer, *arrays)
                        self.result.layers[row.layer.node.name]["data_seconds"] = round(data_seconds, 3)
                    bar.update(len(wave))
        finally:
            torch.set_num_threads(threads)
        self.result.modified = any(row["adopted"] for row in self.result.layers.values())
        return self.result

    def _layers(self, model: ir.Model) -> tuple[list[Layer], dict[str, str]]:
        """The layers AdaRound re-rounds, and the quantized layers it cannot handle with the reason."""
        float_nodes = {node.name: node for node in self.float_model.graph}
        layers, skipped = [], {}
        for node in model.graph:
            if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
                continue
            quantized = model.graph.initializers.get(f"{node.name}.weight_quantized")
            dequantize = node.inputs[1].producer() if node.inputs[1] is not None else None
            if quantized is None or dequantize is None or dequantize.inputs[0] is not quantized:
                continue
            reason = unsupported(node, float_nodes.get(node.name))
            if reason:
                skipped[node.name] = reason
                continue
            layers.append(layer_of(node, float_nodes[node.name], quantized, dequantize))
        return layers, skipped

    def _collect(
        self, layers: list[tuple[int, Layer]], quantized: LayerSequence, clipped: LayerSequence, num_samples: int
    ) -> list[_Rows]:
        """The rows of a wave's LAYERS (with their index in graph order, which seeds their positions), from one
        run of each model's next segment."""
        rows = [
            _Rows(
                layer,
                max(1, math.ceil(min(self.samples, self.memory_bytes // layer.row_bytes) / num_samples)),
                np.random.default_rng([self.seed, index]),
            )
            for index, layer in layers
        ]
        names, wanted = [row.layer.node.name for row in rows], [row.layer.qdq_input for row in rows]
        quantized.run(names, wanted, lambda xs: [row.add_quantized(x) for row, x in zip(rows, xs, strict=True)])
        clipped.run(names, wanted, lambda xs: [row.add_reference(x) for row, x in zip(rows, xs, strict=True)])
        return rows

    def _round(
        self, torch, layer: Layer, rows: np.ndarray, target: np.ndarray, held_out: np.ndarray
    ) -> None:
        start = time.perf_counter()
        train = ~held_out
        if not train.any() or not held_out.any():  # too few samples to hold any out: judge on all rows
            train = held_out = np.ones_like(held_out)
        qmax = weight_qmax(self.layer_precisions.weight_bits(layer.node, self.weight_bits))
        ratio = layer.weight / layer.scale
        floor = np.floor(ratio)
        fraction = np.clip(ratio - floor, 0.0, 1.0)
        # h(V) = fraction at the start: sigmoid(V) = (fraction - gamma) / (zeta - gamma)
        v = torch.tensor(
            -np.log((ZETA - GAMMA) / (fraction - GAMMA) - 1.0), dtype=torch.float32, requires_grad=True
        )
        # floor + h(V) leaves [-qmax, qmax] only where floor itself is outside [-qmax, qmax - 1]: such weights
        # (clipped by the range search) are constants, which spares a clamp over every weight at every step.
        free = (floor >= -qmax) & (floor < qmax)
        base = torch.from_numpy(layer.scale * np.clip(floor, -qmax, qmax))
        step = torch.from_numpy(layer.scale * free)
        bias_t = torch.from_numpy(layer.bias)
        low, high = (torch.from_numpy(bound) for bound in layer.bounds)
        # Minibatches are windows at random offsets into the shuffled rows: views, not per-step gathers.
        order = np.random.default_rng(self.seed).permutation(np.flatnonzero(train))
        x, y = torch.from_numpy(rows[:, order]), torch.from_numpy(target[:, order])
        batch = min(BATCH_ROWS, ROWS_PER_INPUT * rows.shape[2], len(order))
        optimizer = torch.optim.Adam([v], lr=LEARNING_RATE)
        generator = torch.Generator().manual_seed(self.seed)
        done = 0
        while True:
            progress = done / self.iterations
            if progress >= 1.0:
                break
            done += 1
            h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
            weight = base + step * h
            offset = int(torch.randint(len(order) - batch + 1, (), generator=generator))
            out = torch.bmm(x[:, offset : offset + batch], weight) + bias_t
            out = torch.clamp(out, low, high)
            loss = (out - y[:, offset : offset + batch]).pow(2).sum() / batch
            if progress >= WARM_UP:
                beta = BETA_END + (BETA_START - BETA_END) * (1.0 - (progress - WARM_UP) / (1.0 - WARM_UP))
                loss = loss + REGULARIZATION * (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rounded = np.clip(floor + (v.detach().numpy() >= 0.0), -qmax, qmax).astype(np.float32)
        existing = layer.integers()
        held_rows, held_target = rows[:, held_out], target[:, held_out]
        energy = max(float(np.sum(held_target.astype(np.float64) ** 2)), 1e-30)

        def error(q: np.ndarray) -> float:
            diff = layer.output(held_rows, layer.scale * q) - held_target
            return float(np.sum(diff.astype(np.float64) ** 2)) / energy

        before, after = error(existing), error(rounded)
        adopted = after < before
        if adopted:
            layer.set_integers(rounded)
        self.result.layers[layer.node.name] = {
            "error_before": before,
            "error_after": after,
            "adopted": adopted,
            "iterations": done,
            "seconds": round(time.perf_counter() - start, 3),
            "rows": int(train.sum()),
        }


class _Rows:
    """A layer's rows as the QDQ model feeds it and its float targets, at a few random output positions of
    every sample: the positions are drawn on the QDQ model's batch and reused on the reference's."""

    def __init__(self, layer: Layer, per_sample: int, rng: np.random.Generator):
        self.layer, self.per_sample, self.rng = layer, per_sample, rng
        self.rows: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.held_out: list[np.ndarray] = []
        self.chosen: list[np.ndarray] = []

    def add_quantized(self, x_q: np.ndarray) -> None:
        count, positions = len(x_q), self.layer.positions(x_q)
        take = min(self.per_sample, positions)
        chosen = np.stack([self.rng.choice(positions, take, replace=False) for _ in range(count)])
        first = sum(len(c) for c in self.chosen)
        self.chosen.append(chosen)
        self.rows.append(self.layer.rows(x_q, chosen))
        samples = np.arange(first, first + count)
        self.held_out.append(np.repeat(samples % HELD_OUT_EVERY == HELD_OUT_EVERY - 1, take))

    def add_reference(self, x_f: np.ndarray) -> None:
        chosen = self.chosen[len(self.targets)]
        self.targets.append(self.layer.output(self.layer.rows(x_f, chosen), self.layer.weight))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Quantized-input rows [G, R, K], float-model targets [G, R, N] and the held-out mask [R]."""
        return np.concatenate(self.rows, axis=1), np.concatenate(self.targets, axis=1), np.concatenate(self.held_out)
