"""Bias correction: fold the expected output shift that quantization causes into each layer's int32 bias.

Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction", section 4.2.
A quantized layer computes ``y_q = W_q x_q + b`` where the float layer computes ``y = W x + b``. The error
``y_q - y`` is not zero-mean: per output channel c, ``E[y_q - y]_c`` is a systematic shift that every
following layer sees as a wrong bias. Subtracting it from the bias, ``b_c <- b_c - E[y_q - y]_c``, removes it.
y is the layer's pre-activation output (before a fused Relu/Clip) in both models.

mode "empirical": ``E[y]_c`` and ``E[y_q]_c`` are measured on calibration data in onnxruntime, so the
correction covers the weights' and the inputs' rounding error and every upstream error that reaches the
layer. The reference y is not the plain float model but the float model as the QDQ model clips it: float
weights, and every activation QuantizeLinear->DequantizeLinear pair replaced by a Clip to that pair's
representable range. Clipping (percentile calibration) is a deliberate trade, and its error is sparse and
large: against the plain float model, the pre-activation mean error of a layer reading a clipped tensor is
dominated by a few outliers that its Relu6 would have saturated anyway, and shifting every position to
cancel them costs more than it gains. MobileNetV2, per-channel weights, percentile activations, logits SQNR
on held-out views: against the plain float model 15.6 -> 8.8 dB (32 views; 7.4 dB even when corrected on
the evaluation views themselves), against the clipped reference 15.1 -> 16.4 dB (64 views, 256 held out).
The paper's semantics are sequential: a layer is measured after every quantized layer upstream of it has
been corrected. Layers are visited in waves by passes.layer_sequence, which
runs only the nodes between a cached cut and each wave's layers: about two runs of the model in all.

mode "analytic" (data-free): ``E[y_q - y]_c = sum_{i,k} (W_q - W)_{c,i,k} E[x_i]``, the weight error only
(the input's quantization error is taken as zero-mean). E[x_i] comes from the BatchNorm statistics that
passes.fold_batchnorm keeps on the float layer producing x, through the layer's activation as a clipped Gaussian
(passes.batchnorm_moments). A layer whose input has no such statistics (the graph input, a Relu after an Add, a
MaxPool...) is skipped, with the reason recorded.
Approximation: E[x_i] is the same at every position (BatchNorm statistics are per channel). Zero padding
is not approximated away: a padded tap reads an exact 0 in both models, so tap k of a Conv is weighted by
the fraction of output positions where it reads the input, which makes the correction the exact mean over
all output positions under that assumption (when the input's spatial size is known; else every tap counts).

The corrected bias keeps its scale float32(s_in * s_w[c]) and stays within +-edgeq.quantization.qparams.BIAS_LIMIT
(channels clipped there are recorded). A quantized Conv or Gemm without a bias gets an int32 bias behind a
DequantizeLinear with that scale. MatMul has no bias input and ConvTranspose is not handled: both are recorded
as skipped, as are Gemms whose bias stayed float.

Pipeline stage (passes.stage): phase "quantized", when the recipe lists "bias-correction", in the recipe's
``bias_correction`` mode, against the calibrated float model on the calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from edgeq.data import CalibrationData
from edgeq.errors import RecipeError
from edgeq.passes.batchnorm_moments import NoStatistics, input_mean, tap_weights
from edgeq.passes.clipped_reference import clipped_reference
from edgeq.passes.insert_qdq import dequantize_constant
from edgeq.passes.layer_sequence import LayerSequence, input_batches, segment_session
from edgeq.passes.stage import StageContext, StageResult
from edgeq.quantization.qparams import BIAS_LIMIT
from edgeq.quantization.recipe import BIAS_CORRECTIONS

PHASE = "quantized"
LINEAR_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass
class _Layer:
    node: ir.Node  # in the QDQ model
    float_node: ir.Node
    bias: ir.Value  # the int32 initializer "<node>.bias_quantized"
    bias_scale: np.ndarray  # float32, one per channel or one for all


@dataclass
class BiasCorrectionResult(StageResult):
    """``corrections``: node name -> the per-channel change of the dequantized bias; ``skipped``: node name -> why
    it was left alone; ``clipped``: node name -> channels held at BIAS_LIMIT; ``passes``: passes over the data
    (empirical mode)."""

    mode: str = "empirical"
    corrections: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    clipped: dict[str, list[int]] = field(default_factory=dict)
    passes: int = 0

    def summary(self) -> dict:
        return {
            "mode": self.mode,
            "corrected_layers": len(self.corrections),
            "passes_over_data": self.passes,
            "mean_abs_shift": {
                name: float(np.mean(np.abs(shift))) for name, shift in self.corrections.items()
            },
            "skipped": dict(self.skipped),
            "clipped_channels": {name: list(channels) for name, channels in self.clipped.items()},
        }


def stage(context: StageContext) -> BiasCorrectionPass | None:
    if "bias-correction" not in context.recipe.passes:
        return None
    return BiasCorrectionPass(
        context.float_model, context.data, mode=context.recipe.bias_correction, progress=context.progress
    )


class BiasCorrectionPass(ir.passes.InPlacePass):
    """Correct the int32 bias of every quantized Conv/Gemm of a QDQ model built from FLOAT_MODEL."""

    def __init__(
        self,
        float_model: ir.Model,
        data: CalibrationData | None,
        *,
        mode: str = "empirical",
        progress: bool = True,
    ):
        super().__init__()
        if mode not in BIAS_CORRECTIONS:
            raise RecipeError(f"bias correction mode must be one of {', '.join(BIAS_CORRECTIONS)}, not {mode!r}")
        if mode == "empirical" and data is None:
            raise RecipeError("empirical bias correction needs calibration data (or use mode 'analytic')")
        self.float_model = float_model
        self.data = data
        self.mode = mode
        self.progress = progress

    def call(self, model: ir.Model) -> BiasCorrectionResult:
        self.result = BiasCorrectionResult(model, False, self.mode)
        layers = self._layers(model)
        model.graph.sort()
        if self.mode == "analytic":
            for layer in layers:
                try:
                    self._apply(layer, -self._analytic_error(layer))
                except NoStatistics as reason:
                    self.result.skipped[layer.node.name] = str(reason)
        elif layers:  # (no layer, nothing to run)
            self._correct_empirically(model, layers)
        self.result.modified = bool(layers)
        return self.result

    # ---- the layers and their biases ------------------------------------------------------------------
    def _layers(self, model: ir.Model) -> list[_Layer]:
        float_nodes = {node.name: node for node in self.float_model.graph}
        layers = []
        for node in list(model.graph):
            weight = node.inputs[1] if node.op_type in LINEAR_OPS and len(node.inputs) > 1 else None
            weight_dq = weight.producer() if weight is not None else None
            if weight_dq is None or weight_dq.name != f"{node.name}.weight_DequantizeLinear":
                continue  # not a layer with quantized weights
            float_node = float_nodes.get(node.name)
            if node.op_type == "MatMul":
                self.result.skipped[node.name] = "MatMul has no bias input"
            elif node.op_type == "ConvTranspose":
                self.result.skipped[node.name] = "ConvTranspose is not handled"
            elif float_node is None or float_node.op_type != node.op_type:
                self.result.skipped[node.name] = "no node of that name and type in the float model"
            else:
                layer = self._with_bias(model.graph, node, float_node, weight_dq)
                if layer is not None:
                    layers.append(layer)
        return layers

    def _with_bias(
        self, graph: ir.Graph, node: ir.Node, float_node: ir.Node, weight_dq: ir.Node
    ) -> _Layer | None:
        """NODE's int32 bias, created (zero, scale s_in * s_w) when it has none; None if it stays float."""
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            bias_dq = node.inputs[2].producer()
            if bias_dq is None or bias_dq.op_type != "DequantizeLinear":
                self.result.skipped[node.name] = "its bias is float"
                return None
            bias_scale = bias_dq.inputs[1].const_value.numpy()
            return _Layer(node, float_node, bias_dq.inputs[0], bias_scale)
        input_dq = node.inputs[0].producer()
        if input_dq is None or input_dq.op_type != "DequantizeLinear":
            self.result.skipped[node.name] = "its input is not quantized, so it has no bias scale"
            return None
        weight_scale = weight_dq.inputs[1].const_value.numpy()
        bias_scale = (np.float32(input_dq.inputs[1].const_value.numpy()) * weight_scale).astype(np.float32)
        weight_shape = weight_dq.inputs[0].const_value.shape
        transposed = node.op_type == "Conv" or node.attributes.get_int("transB", 0)
        channels = weight_shape[0] if transposed else weight_shape[1]
        zeros = np.zeros(channels, np.int32)
        dequantized = dequantize_constant(
            graph,
            f"{node.name}.bias",
            zeros,
            bias_scale,
            np.zeros_like(bias_scale, dtype=np.int32),
            0 if bias_scale.ndim else None,
        )
        node.resize_inputs(3)
        node.replace_input_with(2, dequantized)
        if node.op_type == "Gemm":  # Y = alpha A B + beta C: the new C must count once
            node.attributes.pop("beta", None)
        return _Layer(node, float_node, dequantized.producer().inputs[0], bias_scale)

    def _apply(self, layer: _Layer, shift: np.ndarray) -> None:
        """Add SHIFT (per channel, in real units) to LAYER's dequantized bias, in whole bias steps."""
        old = layer.bias.const_value.numpy()
        steps = np.rint(np.asarray(shift, np.float64) / layer.bias_scale.astype(np.float64))
        wanted = old.astype(np.int64) + steps.astype(np.int64)
        new = np.clip(wanted, -BIAS_LIMIT, BIAS_LIMIT)
        layer.bias.const_value = ir.tensor(new.astype(np.int32), name=layer.bias.name)
        name = layer.node.name
        self.result.corrections[name] = ((new - old) * layer.bias_scale).astype(np.float32)
        if (new != wanted).any():
            self.result.clipped[name] = np.flatnonzero(new != wanted).tolist()

    # ---- analytic -------------------------------------------------------------------------------------
    def _analytic_error(self, layer: _Layer) -> np.ndarray:
        """E[y_q - y] per channel from the weight error and the BatchNorm-derived input mean."""
        node, float_node = layer.node, layer.float_node
        weight_dq = node.inputs[1].producer()
        q, scale, zero_point = (v.const_value.numpy() for v in weight_dq.inputs[:3])
        shape = [1] * q.ndim
        if scale.ndim:
            shape[weight_dq.attributes.get_int("axis", 1)] = -1
        w_q = (q.astype(np.float64) - zero_point.reshape(shape)) * scale.reshape(shape)
        if float_node.inputs[1].const_value is None:
            raise NoStatistics("its float weights are not constant")
        w = float_node.inputs[1].const_value.numpy().astype(np.float64)
        x_mean = input_mean(float_node.inputs[0]).astype(np.float64)
        if node.op_type == "Gemm":
            w = w * float_node.attributes.get_float("alpha", 1.0)
            error = w_q - w if node.attributes.get_int("transB", 0) else (w_q - w).T
            if x_mean.size != error.shape[1]:
                raise NoStatistics(f"its input mean has {x_mean.size} channels, not {error.shape[1]}")
            return error @ x_mean
        groups = node.attributes.get_int("group", 1)
        error = np.tensordot(w_q - w, tap_weights(float_node, q.shape[2:]), axes=q.ndim - 2)
        out_channels, in_per_group = error.shape
        if x_mean.size != in_per_group * groups:
            raise NoStatistics(f"its input mean has {x_mean.size} channels, not {in_per_group * groups}")
        group_of_channel = np.arange(out_channels) // (out_channels // groups)
        return np.sum(error * x_mean.reshape(groups, in_per_group)[group_of_channel], axis=1)

    # ---- empirical ------------------------------------------------------------------------------------
    def _correct_empirically(self, model: ir.Model, layers: list[_Layer]) -> None:
        inputs = [v for v in model.graph.inputs if not v.is_initializer()]
        cache = input_batches(self.data, model)
        reference = clipped_reference(model, self.float_model)
        reference_nodes = {node.name: node for node in reference.graph}
        reference_outputs = [reference_nodes[layer.node.name].outputs[0] for layer in layers]
        reference_means = _MeanAccumulator(len(layers))
        runner = segment_session(reference, set(reference.graph), inputs, reference_outputs)
        for i in range(len(cache[inputs[0].name])):
            reference_means(runner.run([v.name for v in reference_outputs], {n: a[i] for n, a in cache.items()}))
        expected = dict(zip((layer.node for layer in layers), reference_means.means(), strict=True))
        self.result.passes = 1
        by_name = {layer.node.name: layer for layer in layers}
        sequence = LayerSequence(model, list(by_name), cache)
        with tqdm(
            total=len(layers),
            desc="bias correction",
            unit="layer",
            disable=None if self.progress else True,
            leave=False,
        ) as bar:
            while sequence.pending:
                wave = [by_name[name] for name in sequence.next_wave()]
                means = _MeanAccumulator(len(wave))
                sequence.run([layer.node.name for layer in wave], [layer.node.outputs[0].name for layer in wave], means)
                self.result.passes += 1
                for layer, mean in zip(wave, means.means(), strict=True):
                    self._apply(layer, expected[layer.node] - mean)
                bar.update(len(wave))


class _MeanAccumulator:
    """Called with each batch's tensors; ``means()``: their per-channel (axis 1) means."""

    def __init__(self, count: int):
        self.sums: list = [0.0] * count
        self.counts = [0] * count

    def __call__(self, tensors: list[np.ndarray]) -> None:
        for j, y in enumerate(tensors):
            self.sums[j] = self.sums[j] + y.sum(axis=tuple(a for a in range(y.ndim) if a != 1), dtype=np.float64)
            self.counts[j] += y.size // y.shape[1]

    def means(self) -> list[np.ndarray]:
        return [s / c for s, c in zip(self.sums, self.counts, strict=True)]
