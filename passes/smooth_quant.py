"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models", section 4): move activation outliers into the weights that read them.

Transformers' LayerNorm outputs carry a few channels far larger than the rest; with one int8 scale per tensor the
other channels get a handful of levels. For an activation X (channels j on its last axis) whose every reader is a
MatMul/Gemm with a constant weight W (row j of W multiplies channel j of X),

    X W = (X diag(1/s)) (diag(s) W),     s_j = max|X_j|^alpha / max_k |W_jk|^(1 - alpha)

(max over every reader's weights; s_j = 1 where either is 0). X's producer is rewritten to output X / s and each
reader's rows become W_j * s_j, so the float function is unchanged. Producers that absorb 1/s exactly:
LayerNormalization over the last axis (scale and bias divided by s), a MatMul/Gemm with a constant weight (its
output columns and bias divided), an Add of such a product and a constant (the constant divided too). Reshapes
that keep the last axis may sit between the producer, X and the readers (the Gemm form of passes.matmul_bias_to_gemm).
X is left alone when it is a graph output, when another producer makes it, or when something else reads it (a
residual Add, a Softmax). With ``shared="copy"``, a LayerNormalization whose output also feeds such readers is
copied: the copy, scaled, feeds the MatMul readers and the original the others (one more LayerNorm per copy; BERT's
post-LN layers read every LayerNorm output in the residual Add, so only this reaches them). A smoothed tensor is
renamed ``<name>.smoothed``: it no longer holds the float model's values.

alpha. One per model: given, or ("auto") searched over ALPHAS on the calibration data. X is run once on the data:
its per-channel max |X_j| and up to ROWS rows of it. Each alpha's score is the mean over the affected readers of
||Q(X/s) Q(s W) - X W||^2 / ||X W||^2 on those rows: X/s in the recipe's activation type with one range per
tensor (the recipe's percentile of those rows; their min and max for the other range methods), s W in its weight
encoding (bits, per channel or per tensor; minmax range). The best alpha is applied only if it scores below the unsmoothed
model (else nothing changes). The float model is checked against the original on a fixed random input (an
internal error past TOLERANCE).

Pipeline stage (passes.stage): phase "float", when the recipe lists "smooth-quant", after equalize;
``smooth_quant_alpha`` ("auto" or a number in [0, 1]) and ``smooth_quant_shared`` ("skip" or "copy").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgeq.data import CalibrationData
from edgeq.errors import EdgeqError, RecipeError
from edgeq.io.session import exposing_copy, fixed_batch_size, session
from edgeq.passes.equalize import outputs_on_random_input, relative_change
from edgeq.passes.stage import StageContext, StageResult
from edgeq.quantization.layer_precision import LayerPrecisions
from edgeq.quantization.qparams import ACTIVATION_TYPES, activation_encoding, range_method, weight_scales
from edgeq.quantization.recipe import SMOOTH_QUANT_SHARED, Recipe

PHASE = "float"
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
ROWS = 2048  # rows of each tensor kept for the alpha score
TOLERANCE = 1e-4
LAYERS = {"MatMul", "Gemm"}


@dataclass
class Smoothable:
    """An activation X, the node that makes it and the layers that read it (directly or through Reshapes)."""

    value: ir.Value
    producer: ir.Node
    readers: list[ir.Node]
    other_readers: list[ir.Node] = field(default_factory=list)  # what "copy" keeps on the original LayerNorm


def _constant(value: ir.Value | None) -> np.ndarray | None:
    return None if value is None or value.const_value is None else value.const_value.numpy()


def _keeps_last_axis(node: ir.Node) -> bool:
    """A Reshape whose input and output have the same, static, last dimension (channel j stays channel j)."""
    if node.op_type != "Reshape":
        return False
    shapes = [node.inputs[0].shape, node.outputs[0].shape]
    return all(s is not None and s.rank() and isinstance(s[-1], int) for s in shapes) and shapes[0][-1] == shapes[1][-1]


def _weight(node: ir.Node) -> np.ndarray | None:
    """A layer's constant 2-D weight, or None."""
    weight = _constant(node.inputs[1]) if len(node.inputs) > 1 else None
    return weight if weight is not None and weight.ndim == 2 and weight.dtype == np.float32 else None


def _input_rows(node: ir.Node, weight: np.ndarray) -> np.ndarray:
    """WEIGHT with the rows that multiply the input's channels first."""
    return weight.T if node.op_type == "Gemm" and node.attributes.get_int("transB", 0) else weight


def _reads_channels(node: ir.Node, value: ir.Value) -> bool:
    """NODE is a layer that reads VALUE's last axis as its input channels, against a constant weight."""
    if node.op_type not in LAYERS or node.inputs[0] is not value or _weight(node) is None:
        return False
    return node.op_type == "MatMul" or not node.attributes.get_int("transA", 0)


def _layer_readers(value: ir.Value) -> tuple[list[ir.Node], list[ir.Node]]:
    """The layers that read VALUE's channels (through Reshapes that keep them) and VALUE's other readers."""
    layers, others = [], []
    for user, _ in value.uses():
        if _reads_channels(user, value):
            layers.append(user)
        elif _keeps_last_axis(user) and not user.outputs[0].is_graph_output():
            inner, rest = _layer_readers(user.outputs[0])
            if rest or not inner:
                others.append(user)
            else:
                layers.extend(inner)
        else:
            others.append(user)
    return list(dict.fromkeys(layers)), others


def _absorbs(node: ir.Node) -> bool:
    """NODE can output its result divided by s per last-axis channel by rewriting its constants."""
    if node.op_type == "LayerNormalization":
        rank = node.inputs[0].shape.rank() if node.inputs[0].shape is not None else None
        axis = node.attributes.get_int("axis", -1)
        return _constant(node.inputs[1]) is not None and (axis == -1 or (rank is not None and axis == rank - 1)) and (
            len(node.inputs) < 3 or node.inputs[2] is None or _constant(node.inputs[2]) is not None
        )
    if node.op_type in LAYERS:
        bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        return _weight(node) is not None and (bias is None or _constant(bias) is not None)
    if node.op_type == "Add":
        product, bias = _product_and_bias(node)
        return product is not None and bias is not None
    return False


def _product_and_bias(add: ir.Node) -> tuple[ir.Node | None, ir.Value | None]:
    """The MatMul/Gemm (only read by ADD) and the constant that ADD adds to it."""
    for index in (0, 1):
        product, bias = add.inputs[index].producer(), add.inputs[1 - index]
        if (
            product is not None
            and product.op_type in LAYERS
            and _constant(bias) is not None
            and len(product.outputs[0].uses()) == 1
            and not product.outputs[0].is_graph_output()
            and _absorbs(product)
        ):
            return product, bias
    return None, None


def find_smoothable(graph: ir.Graph, shared: str = "skip") -> tuple[list[Smoothable], dict[str, str]]:
    """Every activation read by constant-weight layers that can be smoothed, and why the others cannot."""
    roots: dict[str, ir.Value] = {}
    for node in graph:
        if node.op_type in LAYERS and _reads_channels(node, node.inputs[0]):
            value = node.inputs[0]
            while (maker := value.producer()) is not None and _keeps_last_axis(maker):
                value = maker.inputs[0]
            roots.setdefault(value.name, value)  # the Reshapes between X and its readers are walked forward
    found, skipped = [], {}
    for name, value in roots.items():
        layers, others = _layer_readers(value)
        producer = value.producer()
        if value.is_graph_output() or producer is None:
            skipped[name] = "a graph input or output"
        elif value.dtype != ir.DataType.FLOAT:
            skipped[name] = "not float32"
        elif not _absorbs(producer):
            skipped[name] = f"its producer ({producer.op_type}) cannot absorb a per-channel scale"
        elif not others:
            found.append(Smoothable(value, producer, layers))
        elif shared == "copy" and producer.op_type == "LayerNormalization" and producer.outputs[0] is value:
            found.append(Smoothable(value, producer, layers, others))
        else:
            skipped[name] = "also read by " + ", ".join(sorted({n.op_type for n in others}))
    return found, skipped


def smoothing_scales(activation_max: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), W_j over every reader's row j (rows first); 1 where 0."""
    weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0).astype(np.float64)
    scales = np.ones(activation_max.shape, np.float64)
    valid = (activation_max > 0) & (weight_max > 0)
    scales[valid] = activation_max[valid] ** alpha / weight_max[valid] ** (1.0 - alpha)
    return scales


def _set_constant(node: ir.Node, index: int, array: np.ndarray) -> None:
    """Give NODE's input INDEX the constant ARRAY, in a new initializer when another node reads the old one."""
    value = node.inputs[index]
    if len(value.uses()) == 1:
        value.const_value = ir.tensor(array.astype(np.float32), name=value.name)
        return
    name = f"{node.name}.smoothed_{index}"
    new = ir.Value(name=name, const_value=ir.tensor(array.astype(np.float32), name=name))
    new.shape, new.dtype = ir.Shape(array.shape), ir.DataType.FLOAT
    node.graph.register_initializer(new)
    node.replace_input_with(index, new)


def _divide_output(node: ir.Node, scales: np.ndarray) -> None:
    """Rewrite NODE's constants so that it outputs its result / SCALES (last axis)."""
    if node.op_type == "LayerNormalization":
        for index in (1, 2):
            if len(node.inputs) > index and node.inputs[index] is not None:
                _set_constant(node, index, _constant(node.inputs[index]) / scales)
        return
    if node.op_type == "Add":
        product, bias = _product_and_bias(node)
        _divide_output(product, scales)
        _set_constant(node, node.inputs.index(bias), _constant(bias) / scales)
        return
    weight = _constant(node.inputs[1])
    transposed = node.op_type == "Gemm" and node.attributes.get_int("transB", 0)
    _set_constant(node, 1, weight / (scales[:, None] if transposed else scales))
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
        _set_constant(node, 2, _constant(node.inputs[2]) / scales)


def _multiply_rows(node: ir.Node, scales: np.ndarray) -> None:
    weight = _constant(node.inputs[1])
    transposed = node.op_type == "Gemm" and node.attributes.get_int("transB", 0)
    _set_constant(node, 1, weight * (scales if transposed else scales[:, None]))


def _copy_layer_norm(graph: ir.Graph, item: Smoothable) -> None:
    """Give the layer readers their own copy of the LayerNormalization (its constants are unshared on rescaling)."""
    original = item.producer
    copy = ir.node(
        "LayerNormalization",
        list(original.inputs),
        dict(original.attributes.items()),
        name=f"{original.name}.smoothed",
        version=original.version,
    )
    graph.insert_after(original, copy)
    out = copy.outputs[0]
    out.shape, out.dtype = item.value.shape, item.value.dtype
    for user, index in list(item.value.uses()):
        if user not in item.other_readers:
            user.replace_input_with(index, out)
    item.producer, item.value = copy, out


def _rename_smoothed(item: Smoothable, name: str) -> None:
    """``<name>.smoothed`` for X (or its copy) and the Reshape outputs between it and its readers: they hold X / s."""
    for reader in item.readers:
        value = reader.inputs[0]
        while value is not item.value and not value.name.endswith(".smoothed"):
            value.name = f"{value.name}.smoothed"
            value = value.producer().inputs[0]
    item.value.name = f"{name}.smoothed"


def _statistics(model: ir.Model, values: list[ir.Value], data: CalibrationData):
    """Per value: max |X_j| over DATA (channels on the last axis) and up to ROWS of its rows, spread over DATA."""
    runner = session(exposing_copy(model, values), optimization="basic", what="the float model")
    names = [v.name for v in values]
    maxima: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    step = None
    for batch in data.batches(fixed_batch_size(model) or 8):
        for name, out in zip(names, runner.run(names, batch), strict=True):
            flat = out.reshape(-1, out.shape[-1])
            maxima[name] = np.maximum(maxima.get(name, 0.0), np.abs(flat).max(axis=0))
            if step is None:  # about ROWS rows from the whole data, when its size is known
                per_sample = len(flat) // max(1, len(next(iter(batch.values()))))
                step = max(1, per_sample * (data.num_samples or 1) // ROWS)
            rows[name].append(np.array(flat[::step], np.float32))
    kept = {}
    for name, parts in rows.items():
        stacked = np.concatenate(parts)
        kept[name] = stacked[np.linspace(0, len(stacked) - 1, min(len(stacked), ROWS)).astype(np.int64)]
    return maxima, kept


def _quantization_error(
    rows: np.ndarray, weights: list[np.ndarray], bits: list[int], scales: np.ndarray, recipe: Recipe
) -> float:
    """Mean over the readers of ||Q(X/s) Q(s W) - X W||^2 / ||X W||^2 (rows of W first; each W with its BITS)."""
    qtype = ACTIVATION_TYPES["int8" if recipe.activation_type == "auto" else recipe.activation_type]
    method = range_method(recipe.calib_method, qtype)
    smoothed = rows / scales
    if method == "percentile":
        lo, hi = np.percentile(smoothed, [100.0 - recipe.percentile, recipe.percentile])
    else:  # minmax; entropy and mse ranges are taken as minmax here
        lo, hi = smoothed.min(), smoothed.max()
    if qtype.symmetric:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    encoding = activation_encoding(lo, hi, qtype)
    zero = encoding.zero_point
    x_q = (encoding.quantize(smoothed).astype(np.float64) - zero) * float(encoding.scale)
    errors = []
    for weight, weight_bits in zip(weights, bits, strict=True):
        scaled = weight * scales[:, None]
        axis = 1 if recipe.per_channel else None
        # minmax: the mse clipping search costs 3x the whole score and did not move the choice on the MiniLMs
        w_scale = weight_scales(scaled, axis, weight_bits).astype(np.float64)
        limit = 2 ** (weight_bits - 1) - 1
        w_q = np.clip(np.rint(scaled / w_scale), -limit, limit) * w_scale
        reference = rows.astype(np.float64) @ weight
        errors.append(np.sum((x_q @ w_q - reference) ** 2) / max(np.sum(reference**2), 1e-30))
    return float(np.mean(errors))


@dataclass
class SmoothQuantResult(StageResult):
    """``smoothed``: tensor -> its producer, readers, whether its LayerNorm was copied and its largest s_j;
    ``skipped``: tensor -> why it was left alone; ``scores``: each alpha's error ("none": unsmoothed)."""

    alpha: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    smoothed: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    change: float = 0.0

    def summary(self) -> dict:
        return {
            "alpha": self.alpha,
            "error_by_alpha": {key: round(score, 8) for key, score in self.scores.items()},
            "smoothed": self.smoothed,
            "skipped": self.skipped,
            "change_on_random_input": self.change,
        }


def stage(context: StageContext) -> SmoothQuantPass | None:
    recipe = context.recipe
    if "smooth-quant" not in recipe.passes:
        return None
    return SmoothQuantPass(recipe, context.data, alpha=recipe.smooth_quant_alpha, shared=recipe.smooth_quant_shared)


class SmoothQuantPass(ir.passes.InPlacePass):
    """Smooth every activation the module docstring describes, with one alpha (given, or searched on DATA)."""

    def __init__(self, recipe: Recipe, data: CalibrationData, *, alpha: float | str = "auto", shared: str = "skip"):
        super().__init__()
        if shared not in SMOOTH_QUANT_SHARED:
            raise RecipeError(f"smooth_quant_shared must be one of {', '.join(SMOOTH_QUANT_SHARED)}, not {shared!r}")
        self.recipe, self.data, self.alpha, self.shared = recipe, data, alpha, shared

    def call(self, model: ir.Model) -> SmoothQuantResult:
        items, skipped = find_smoothable(model.graph, self.shared)
        if not items:
            return SmoothQuantResult(model, False, skipped=skipped)
        before = outputs_on_random_input(model)
        maxima, rows = _statistics(model, [item.value for item in items], self.data)
        weights = {item.value.name: [_input_rows(n, _weight(n)).astype(np.float64) for n in item.readers] for item in items}
        precisions = LayerPrecisions(self.recipe.layers)
        bits = {item.value.name: [precisions.weight_bits(n, self.recipe.weight_bits) for n in item.readers] for item in items}

        def score(alpha: float | None) -> float:
            return float(np.mean([
                _quantization_error(
                    rows[name],
                    weights[name],
                    bits[name],
                    np.ones(len(maxima[name])) if alpha is None else smoothing_scales(maxima[name], weights[name], alpha),
                    self.recipe,
                )
                for name in rows
            ]))  # fmt: skip

        alphas = ALPHAS if self.alpha == "auto" else (float(self.alpha),)
        scores = {"none": score(None), **{str(alpha): score(alpha) for alpha in alphas}}
        best = min(alphas, key=lambda alpha: scores[str(alpha)])
        if self.alpha == "auto" and scores[str(best)] >= scores["none"]:
            return SmoothQuantResult(model, False, None, scores, skipped=skipped)
        smoothed = {}
        for item in items:
            name = item.value.name
            scales = smoothing_scales(maxima[name], weights[name], best)
            if item.other_readers:
                _copy_layer_norm(model.graph, item)
            _divide_output(item.producer, scales)
            for reader in item.readers:
                _multiply_rows(reader, scales)
            _rename_smoothed(item, name)
            smoothed[name] = {
                "producer": item.producer.op_type,
                "readers": [reader.name for reader in item.readers],
                "copied_layer_norm": bool(item.other_readers),
                "largest_scale": float(scales.max()),
            }
        change = relative_change(before, outputs_on_random_input(model))
        if change > TOLERANCE:
            raise EdgeqError(f"internal error: smoothing changed the float model by {change:.2e} (relative)")
        return SmoothQuantResult(model, True, best, scores, smoothed, skipped, change)

