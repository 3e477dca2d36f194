"""Dyadic requantization: every multiplier the integer kernels derive from the scales has at most W significant bits.

HAWQ-V3 (Yao et al. 2021, "HAWQ-V3: Dyadic Neural Network Quantization", section 3.2): integer-only inference
requantizes with dyadic numbers b / 2^c. TFLite already does (docs/integer-arithmetic.md §3-§4): the real multiplier M is
computed in double from the float32 scales stored in the file and stored as M0 * 2^(shift - 31), M0 =
round(frexp(M).q * 2^31) in [2^30, 2^31), a 31-bit significand. An integer accelerator with a W-bit multiplier
(or a shifter only, W = 1) needs M0's low 31 - W bits to be zero, i.e. M = m * 2^e with m an integer of at most W
bits, exactly. This pass moves the stored scales of edgeq's QDQ model so that every multiplier is such a number.

Write every scale as s = n * 2^k with n odd, the scale's *odd significand*. The multipliers are (TFLite's reference
kernels, edgeq/reference/): Conv/Gemm/MatMul s_in * s_w[c] / s_out (per channel; per-tensor FULLY_CONNECTED
rounds s_in * s_w to float32 first), ADD s_i / 2max and 2max / (2^20 s_out) with max = max(s_1, s_2), MUL
s_1 s_2 / s_out, MEAN (GlobalAveragePool) and requantizing QUANTIZE s_in / s_out. Pools, Concat, reshapes, Pad,
Resize, Min and Max have none: their encodings are equal and must stay equal.

1. Activation scales become P-bit floats (n < 2^P), rounded *up*: the representable range only grows and zero
   points are kept, so zero stays exact and nothing new clips. P = min(W // 2, 8); 1 for pow2.
2. Tensors tied by an op without weights (Add, Mul, GlobalAveragePool/ReduceMean, a Q after a DQ, and every
   encoding-sharing op) form a group with one odd significand n_G, each member becoming the smallest n_G * 2^k
   at or above its scale. Then each of those multipliers is n_G^i * 2^e, i in {0, 1}: exact in double and at
   most P <= W bits. n_G is the odd P-bit number that costs the group least (sum over members of log2 s'/s);
   a group holding a fixed output encoding (Softmax and Sigmoid 1/256, Tanh 1/128) keeps it (n_G = 1).
3. Conv/Gemm/MatMul, input n_in 2^x, output n_out 2^y (both from steps 1-2): the weight scales absorb the rest.
   Channel c's multiplier M_c = s_in s_w[c] / s_out becomes the smallest M'_c = n_in j_c 2^(e_c) >= M_c with
   j_c < 2^J, J the largest width with n_in (2^J - 1) < 2^W and n_in n_out (2^J - 1) < 2^24. The new weight scale
   s'_w[c] = M'_c s_out / s_in = j_c n_out 2^(e_c + y - x) has at most 24 bits, so it is a float32 exactly;
   s_in s'_w[c] = n_in n_out j_c 2^(...) is exact in float32 (per-tensor FULLY_CONNECTED's product, and the bias
   scale float32(s_in s'_w[c]) of docs/quantization-conventions.md §5); and double(s_in) * double(s'_w[c]) / double(s_out) is exactly
   n_in j_c 2^(e_c), at most W bits. s'_w >= s_w (by less than a factor 1 + 2^(1-J)), so the weights,
   re-quantized from their dequantized values with edgeq.quantization.qparams.quantize_weights (channel sums kept), never
   clip; the int32 bias is re-rounded to its new scale, and a channel whose bias would pass
   edgeq.quantization.qparams.BIAS_LIMIT gets its weight scale doubled (recorded in the report).
4. pow2 (W = P = J = 1): every activation, weight and bias scale is a power of two and every multiplier is
   2^e (M0 = 2^30): requantization is a pure shift, as AMD Vitis AI / Quark's XINT8 scheme does.

W = 31 is TFLite's own convention: the pass changes nothing. Kernels with their own fixed-point arithmetic
(Sigmoid, Softmax, Tanh, HardSwish, LeakyRelu, HardSigmoid: lookup tables or internal multipliers) are not made
dyadic; the report lists them. ``report``: the mode, the requantization points by op and their multiplier count,
the largest relative change of any multiplier, of any activation scale and of any weight scale.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgeq.errors import RecipeError, UnsupportedError
from edgeq.io.onnx_model import clone_model
from edgeq.io.session import fixed_batch_size, session
from edgeq.measure.metrics import float_pairs, sqnr_db
from edgeq.passes.stage import StageContext, StageResult
from edgeq.quantization.plan import BIAS_INPUT, FUSABLE_ACTIVATIONS, WEIGHT_INPUT
from edgeq.quantization.qparams import BIAS_LIMIT, quantize_weights

PHASE = "quantized"
TFLITE_SIGNIFICAND_BITS = 31
FLOAT32_SIGNIFICAND_BITS = 24
ADD_LEFT_SHIFT = 20  # edgeq.reference.add: int8 ADD brings both inputs to 20 extra fractional bits
FIXED_OUTPUT_OPS = {"Softmax", "Sigmoid", "Tanh"}
OWN_ARITHMETIC_OPS = FIXED_OUTPUT_OPS | {"HardSwish", "LeakyRelu", "HardSigmoid"}
RESCALING_OPS = {"Add": "Add", "Mul": "Mul", "GlobalAveragePool": "Mean", "ReduceMean": "Mean"}


def odd_significand(scale: float) -> tuple[int, int]:
    """(n, k) with scale = n * 2^k, n odd."""
    q, exponent = math.frexp(scale)
    n, k = int(q * 2**53), exponent - 53
    while n % 2 == 0:
        n //= 2
        k += 1
    return n, k


def round_up_significand(scale: float, bits: int) -> float:
    """The smallest float with a BITS-bit significand at or above SCALE."""
    q, exponent = math.frexp(scale)
    return math.ldexp(math.ceil(q * 2**bits), exponent - bits)


def round_up_on_grid(scale: float, n: int) -> float:
    """The smallest n * 2^k at or above SCALE."""
    k = math.frexp(scale / n)[1]  # scale / n < 2^k
    while math.ldexp(n, k - 1) >= scale:
        k -= 1
    return math.ldexp(n, k)


def grid_cost(scales: list[float], n: int) -> float:
    """Resolution the tensors of SCALES lose on the grid n * 2^k, in bits: sum of log2(s' / s)."""
    return sum(math.log2(round_up_on_grid(s, n) / s) for s in scales)


class _ScaleGroups:
    """Union-find over activation scale initializers: members must end up with one odd significand."""

    def __init__(self):
        self.parent: dict[int, int] = {}
        self.values: dict[int, ir.Value] = {}

    def add(self, value: ir.Value) -> int:
        self.parent.setdefault(id(value), id(value))
        self.values[id(value)] = value
        return id(value)

    def find(self, key: int) -> int:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, values: list[ir.Value]) -> None:
        keys = [self.find(self.add(v)) for v in values]
        for key in keys[1:]:
            self.parent[key] = keys[0]

    def groups(self) -> list[list[ir.Value]]:
        members: dict[int, list[ir.Value]] = {}
        for key, value in self.values.items():
            members.setdefault(self.find(key), []).append(value)
        return list(members.values())


def _scale(value: ir.Value) -> np.ndarray:
    return value.const_value.numpy().astype(np.float64)


def _set(value: ir.Value, array: np.ndarray, dtype) -> None:
    value.const_value = ir.tensor(np.asarray(array).astype(dtype), name=value.name)


def _dequantizer(value: ir.Value | None) -> ir.Node | None:
    """The DequantizeLinear with a stored scale that produces VALUE (a model's own Q/DQ with a scale computed at run
    time is float arithmetic to this pass: nothing to move)."""
    node = None if value is None else value.producer()
    if node is None or node.op_type != "DequantizeLinear" or node.inputs[1].const_value is None:
        return None
    return node


def _output_quantizer(node: ir.Node) -> ir.Node | None:
    """The QuantizeLinear with a stored scale (see _dequantizer) that quantizes NODE's output, through a fused
    Relu/Clip."""
    uses = list(node.outputs[0].uses())
    if len(uses) == 1 and uses[0][0].op_type in FUSABLE_ACTIVATIONS:
        uses = list(uses[0][0].outputs[0].uses())
    quantizers = [
        user
        for user, index in uses
        if user.op_type == "QuantizeLinear" and index == 0 and user.inputs[1].const_value is not None
    ]
    return quantizers[0] if len(quantizers) == 1 else None


class _Layer:
    """A Conv/Gemm/MatMul with quantized input, weights and output: its multipliers are s_in * s_w / s_out."""

    def __init__(self, node: ir.Node, input_scale: ir.Value, output_scale: ir.Value, weight_dq: ir.Node):
        self.node = node
        self.input_scale = input_scale
        self.output_scale = output_scale
        self.weight_dq = weight_dq
        bias_index = BIAS_INPUT.get(node.op_type)
        self.bias_dq = _dequantizer(node.inputs[bias_index]) if bias_index and len(node.inputs) > bias_index else None


@dataclass
class DyadicResult(StageResult):
    """What the pass moved: the requantization points and multipliers it saw, the largest relative change of a
    multiplier, an activation scale and a weight scale, the channels whose weight scale was raised to keep the
    bias in range, the ops whose arithmetic is not dyadic; with a reference, the accuracy cost."""

    report: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return dict(self.report)


def stage(context: StageContext) -> DyadicPass | None:
    """Last of the pipeline's passes, when the recipe narrows the multipliers: it moves the scales the passes
    before it worked with."""
    recipe = context.recipe
    if recipe.dyadic_bits >= TFLITE_SIGNIFICAND_BITS and not recipe.pow2:
        return None
    return DyadicPass(recipe.dyadic_bits, pow2=recipe.pow2, reference=context.float_model, data=context.data)


class DyadicPass(ir.passes.InPlacePass):
    """Make every requantization multiplier of a QDQ model a SIGNIFICAND_BITS-bit dyadic number (see above).

    With a float REFERENCE model and DATA, the report also gives the cost: the lowest output SQNR against the
    reference on the first data batch, before and after the pass.
    """

    def __init__(
        self,
        significand_bits: int = TFLITE_SIGNIFICAND_BITS,
        pow2: bool = False,
        *,
        reference: ir.Model | None = None,
        data=None,
    ):
        super().__init__()
        if not 1 <= significand_bits <= TFLITE_SIGNIFICAND_BITS:
            raise RecipeError(f"significand_bits must be in 1..{TFLITE_SIGNIFICAND_BITS}, not {significand_bits}")
        self.width = 1 if pow2 else significand_bits
        self.activation_bits = 1 if pow2 else min(self.width // 2, 8)
        self.mode = "pow2" if pow2 else f"{self.width}-bit"
        self.reference = reference
        self.data = data

    def call(self, model: ir.Model) -> DyadicResult:
        before_pass = clone_model(model) if self.reference is not None else None
        self.raised_bias_channels: dict[str, list[int]] = {}
        groups, pinned, layers, points, not_dyadic = self._collect(model.graph)
        before = {key: _scale(value) for key, value in groups.values.items()}
        before.update({id(layer.weight_dq.inputs[1]): _scale(layer.weight_dq.inputs[1]) for layer in layers})
        multipliers_before = [self._multipliers(point, before) for point in points]
        modified = self.width < TFLITE_SIGNIFICAND_BITS
        if modified:
            self._move_activation_scales(groups, pinned)
            for layer in layers:
                self._absorb_into_weights(layer)
        after = {key: _scale(value) for key, value in groups.values.items()}
        after.update({id(layer.weight_dq.inputs[1]): _scale(layer.weight_dq.inputs[1]) for layer in layers})
        changes = [
            np.max(np.abs(self._multipliers(point, after) / old - 1.0))
            for point, old in zip(points, multipliers_before, strict=True)
        ]

        def largest_change(keys) -> float:
            return max((float(np.max(np.abs(after[k] / before[k] - 1.0))) for k in keys), default=0.0)

        report = {"mode": self.mode, "significand_bits": self.width}
        report.update(
            {
                "activation_significand_bits": self.activation_bits if modified else FLOAT32_SIGNIFICAND_BITS,
                "requantization_points": dict(Counter(kind for kind, *_ in points)),
                "multipliers": int(sum(m.size for m in multipliers_before)),
                "max_multiplier_change": float(max(changes, default=0.0)),
                "max_activation_scale_change": largest_change(groups.values),
                "max_weight_scale_change": largest_change([id(layer.weight_dq.inputs[1]) for layer in layers]),
                "scale_groups": sum(len(g) > 1 for g in groups.groups()),
                "raised_bias_channels": self.raised_bias_channels,
                "not_dyadic": not_dyadic,
            }
        )
        if self.reference is not None:
            report.update(self._cost(before_pass, model))
        return DyadicResult(model, modified, report)

    def _cost(self, before: ir.Model, after: ir.Model) -> dict:
        """Output SQNR against the float reference on the first data batch, before and after the pass."""
        batch = next(iter(self.data.batches(fixed_batch_size(self.reference) or 8)))
        # basic optimizations only: the QDQ models as their Q/DQ nodes compute, not as onnxruntime fuses them (its
        # fused kernels are another arithmetic, and some fusions fail to load: AveragePool with dilations)
        reference = session(self.reference, optimization="basic").run(None, batch)
        outputs = {
            name: session(model, optimization="basic").run(None, batch)
            for name, model in (("before", before), ("after", after))
        }
        return {
            f"sqnr_db_on_calibration_batch_{name}": min(
                (sqnr_db(r, q) for r, q in float_pairs(reference, quantized)), default=float("inf")
            )
            for name, quantized in outputs.items()
        }

    # ----------------------------------------------------------------------------------------- the graph

    def _collect(self, graph: ir.Graph):
        """Scale groups, pinned (fixed) scales, layers, requantization points and ops with their own arithmetic.

        A point is (kind, input scale values, output scale value, weight scale value or None)."""
        groups = _ScaleGroups()
        pinned: set[int] = set()
        layers: list[_Layer] = []
        points: list[tuple] = []
        own_arithmetic: list[str] = []
        float_layers: list[str] = []
        for node in graph:
            if node.op_type == "QuantizeLinear" and node.inputs[1].const_value is None:
                own_arithmetic.append(node.name)  # a scale computed at run time (see _dequantizer)
                continue
            if node.op_type == "QuantizeLinear":
                scales = [node.inputs[1]] + [dq.inputs[1] for dq, _ in node.outputs[0].uses()]
                source = _dequantizer(node.inputs[0])
                if source is not None:  # a requantization between two encodings
                    points.append(("Quantize", [source.inputs[1]], node.inputs[1], None))
                    scales.append(source.inputs[1])
                groups.union(scales)
                continue
            if node.op_type == "DequantizeLinear" or (
                node.op_type in FUSABLE_ACTIVATIONS and not any(_dequantizer(v) for v in node.inputs)
            ):
                continue  # Q/DQ pairs are handled at their Q; a fused Relu/Clip belongs to the op before it
            quantizer = _output_quantizer(node)
            output_scale = quantizer.inputs[1] if quantizer is not None else None
            if node.op_type in WEIGHT_INPUT:
                layer = self._layer(node, output_scale)
                if layer is None:
                    float_layers.append(node.name)
                    continue
                layers.append(layer)
                points.append((node.op_type, [layer.input_scale], output_scale, layer.weight_dq.inputs[1]))
                continue
            input_scales = [dq.inputs[1] for dq in map(_dequantizer, node.inputs) if dq is not None]
            table = _dequantizer(node.inputs[0]) if node.op_type == "Gather" else None
            if table is not None and table.inputs[0].const_value is not None:
                continue  # an embedding table (per row) is requantized to the output's encoding: no multiplier
            if node.op_type in OWN_ARITHMETIC_OPS:
                own_arithmetic.append(node.name)
                if node.op_type in FIXED_OUTPUT_OPS and output_scale is not None:
                    pinned.add(groups.add(output_scale))
                continue
            members = input_scales + ([output_scale] if output_scale is not None else [])
            groups.union(members)
            kind = RESCALING_OPS.get(node.op_type)
            if kind is not None and output_scale is not None:
                points.append((kind, input_scales, output_scale, None))
        return groups, pinned, layers, points, own_arithmetic + float_layers  # not made dyadic

    @staticmethod
    def _layer(node: ir.Node, output_scale: ir.Value | None) -> _Layer | None:
        """NODE as a quantized layer, or None when it stays float (an excluded node, an unquantized input)."""
        input_dq = _dequantizer(node.inputs[0])
        weight_dq = _dequantizer(node.inputs[WEIGHT_INPUT[node.op_type]])
        if input_dq is None or weight_dq is None or weight_dq.inputs[0].const_value is None or output_scale is None:
            return None
        if node.op_type == "ConvTranspose":  # its weight channels are not its bias channels (groups)
            raise UnsupportedError(f"node {node.name}: the dyadic pass does not handle ConvTranspose")
        return _Layer(node, input_dq.inputs[1], output_scale, weight_dq)

    @staticmethod
    def _multipliers(point: tuple, scales: dict[int, np.ndarray]) -> np.ndarray:
        """The real multipliers of a point as TFLite's kernels form them, from SCALES (id of value -> array)."""
        kind, inputs, output, weight = point
        s_in = [float(scales[id(v)]) for v in inputs]
        s_out = float(scales[id(output)])
        if weight is not None:
            return s_in[0] * scales[id(weight)].reshape(-1) / s_out
        if kind == "Add":
            twice_max = 2 * max(s_in)
            return np.array([s / twice_max for s in s_in] + [twice_max / (2**ADD_LEFT_SHIFT * s_out)])
        if kind == "Mul":
            return np.array([math.prod(s_in) / s_out])
        return np.array([s_in[0] / s_out])  # Mean, Quantize

    # -------------------------------------------------------------------------------------- the rewrite

    def _move_activation_scales(self, groups: _ScaleGroups, pinned: set[int]) -> None:
        """Steps 1-2: every group onto the grid n_G * 2^k (rounded up); integer constants in it re-rounded."""
        for members in groups.groups():
            scales = [float(_scale(v)) for v in members]
            fixed = [s for v, s in zip(members, scales, strict=True) if id(v) in pinned]
            if fixed:
                candidates = [odd_significand(fixed[0])[0]]
            elif len(members) == 1:
                candidates = [odd_significand(round_up_significand(scales[0], self.activation_bits))[0]]
            else:
                candidates = list(range(1, 2**self.activation_bits, 2))
            n = min(candidates, key=lambda odd: grid_cost(scales, odd))
            for value, old in zip(members, scales, strict=True):
                new = round_up_on_grid(old, n)
                if id(value) in pinned and new != old:
                    raise UnsupportedError(f"{value.name}: fixed output scales {fixed} cannot share a dyadic grid")
                if new != old:
                    _set(value, new, np.float32)
                    self._requantize_constants(value, old, new)

    @staticmethod
    def _requantize_constants(scale: ir.Value, old: float, new: float) -> None:
        """Integer constants (Add/Mul/Min/Max operands) behind a DequantizeLinear of SCALE, onto the new scale."""
        for user, _ in scale.uses():
            data = user.inputs[0]
            if user.op_type != "DequantizeLinear" or data.const_value is None:
                continue
            q = data.const_value.numpy()
            has_zero_point = len(user.inputs) > 2 and user.inputs[2] is not None
            zero_point = int(user.inputs[2].const_value.numpy()) if has_zero_point else 0
            info = np.iinfo(q.dtype)
            moved = np.rint((q.astype(np.float64) - zero_point) * old / new) + zero_point
            _set(data, np.clip(moved, info.min, info.max), q.dtype)

    def _absorb_into_weights(self, layer: _Layer) -> None:
        """Step 3: per-channel weight scales s'_w = j n_out 2^(...), weights and bias re-rounded."""
        s_in, s_out = float(_scale(layer.input_scale)), float(_scale(layer.output_scale))
        n_in, x = odd_significand(s_in)
        n_out, y = odd_significand(s_out)
        bits = self.width
        while bits > 1 and (
            (n_in * (2**bits - 1)).bit_length() > self.width
            or (n_in * n_out * (2**bits - 1)).bit_length() > FLOAT32_SIGNIFICAND_BITS
        ):
            bits -= 1
        q_value, scale_value = layer.weight_dq.inputs[0], layer.weight_dq.inputs[1]
        old_scale = _scale(scale_value)
        per_channel = old_scale.reshape(-1)
        new_scale = np.empty_like(per_channel)
        for c, s_w in enumerate(per_channel):
            q, exponent = math.frexp(s_in * s_w / (s_out * n_in))  # M_c / n_in = q * 2^exponent
            new_scale[c] = math.ldexp(math.ceil(q * 2**bits) * n_out, exponent - bits + y - x)
        raised = self._fit_bias(layer, s_in, new_scale)
        if raised:
            self.raised_bias_channels[layer.node.name] = raised
        axis = layer.weight_dq.attributes.get_int("axis", 1) if old_scale.ndim else None
        q = q_value.const_value.numpy()
        shape = [1] * q.ndim
        if axis is not None:
            shape[axis] = -1
        weights = q.astype(np.float64) * old_scale.reshape(shape)
        weight_bits = int(np.abs(q).max()).bit_length() + 1  # the integers already reach the layer's qmax
        requantized = quantize_weights(weights, new_scale, axis, weight_bits, channel_axis=axis)
        _set(q_value, requantized, q.dtype)
        _set(scale_value, new_scale.reshape(old_scale.shape), np.float32)
        if not np.array_equal(_scale(scale_value).reshape(-1), new_scale):
            raise AssertionError(f"{layer.node.name}: a weight scale is not exact in float32")

    @staticmethod
    def _fit_bias(layer: _Layer, s_in: float, weight_scale: np.ndarray) -> list[int]:
        """Re-round the int32 bias to float32(s_in * s'_w); double s'_w where it would pass BIAS_LIMIT."""
        if layer.bias_dq is None:
            return []
        bias_q, bias_scale = layer.bias_dq.inputs[0], layer.bias_dq.inputs[1]
        old_scale = _scale(bias_scale)
        real = bias_q.const_value.numpy().astype(np.float64) * old_scale
        raised = []
        while True:
            new_scale = (np.float32(s_in) * weight_scale.astype(np.float32)).astype(np.float64)
            new_scale = new_scale if old_scale.ndim else new_scale[:1].reshape(())
            q = np.rint(real / new_scale)
            over = np.flatnonzero(np.abs(q).reshape(-1) > BIAS_LIMIT)
            if not over.size:
                break
            channels = over if weight_scale.size > 1 else np.arange(1)
            weight_scale[channels] *= 2
            raised.extend(int(c) for c in channels)
        _set(bias_q, q, np.int32)
        _set(bias_scale, new_scale, np.float32)
        return sorted(set(raised))
