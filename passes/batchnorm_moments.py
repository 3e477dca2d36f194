"""Per-channel means of a float model's activations from the BatchNorm statistics kept on its layers.

passes.fold_batchnorm keeps, on each layer a BatchNorm was folded into, the BatchNorm's (gamma, beta): the layer's
pre-activation output is then taken as N(beta_i, gamma_i^2) per channel i. Through Clip(lo, hi) (Relu: lo = 0,
hi = inf; Relu6: Clip(0, 6); equalization's Relu -> Min(x, h_i) is Clip(0, h_i) per channel) the mean is the
clipped Gaussian's

    E[clip(z, lo, hi)] = lo Phi(a) + mu (Phi(b) - Phi(a)) + sigma (phi(a) - phi(b)) + hi (1 - Phi(b)),
    a = (lo - mu) / sigma,  b = (hi - mu) / sigma,

and without an activation it is beta. Means add through Add and pass unchanged through pooling averages and
channel-preserving reshapes. Where a tensor has no such statistics (a graph input, a Relu after an Add, a
MaxPool...) ``NoStatistics`` says why. Analytic (data-free) bias correction uses these means; ``tap_weights``
weights a convolution's kernel taps by how often they read the input rather than zero padding.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeq.passes.fold_batchnorm import batchnorm_statistics
from edgeq.quantization.plan import activation_bounds

MEAN_PRESERVING_OPS = {"GlobalAveragePool", "AveragePool"}
LAYOUT_OPS = {"Flatten", "Reshape", "Squeeze"}


class NoStatistics(Exception):
    """The mean of a tensor cannot be derived from BatchNorm statistics (the message says why)."""


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x, np.float64) / math.sqrt(2.0)))


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(np.isfinite(x), np.exp(-0.5 * np.minimum(x * x, 1e4)) / math.sqrt(2 * math.pi), 0.0)


def clipped_normal_mean(mean: np.ndarray, std: np.ndarray, low, high) -> np.ndarray:
    """E[clip(z, LOW, HIGH)] for z ~ N(MEAN, STD^2), elementwise (bounds scalar or per channel, may be -inf/inf)."""
    mean, std = np.asarray(mean, np.float64), np.abs(np.asarray(std, np.float64))
    low, high = (np.broadcast_to(np.asarray(b, np.float64), mean.shape) for b in (low, high))
    safe_std = np.where(std > 0, std, 1.0)
    a, b = (low - mean) / safe_std, (high - mean) / safe_std
    cdf_a, cdf_b = _normal_cdf(a), _normal_cdf(b)
    below = np.where(np.isfinite(low), low, 0.0) * cdf_a
    above = np.where(np.isfinite(high), high, 0.0) * (1.0 - cdf_b)
    clipped = below + mean * (cdf_b - cdf_a) + std * (_normal_pdf(a) - _normal_pdf(b)) + above
    return np.where(std > 0, clipped, np.clip(mean, low, high))


def activated_mean(node: ir.Node, ceiling: np.ndarray | float = math.inf) -> np.ndarray:
    """E[output] of the Relu/Clip NODE (then clamped at CEILING) after a layer with BatchNorm statistics."""
    pre = node.inputs[0].producer()
    statistics = batchnorm_statistics(pre) if pre is not None else None
    if statistics is None:
        raise NoStatistics(f"{node.op_type} {node.name} does not follow a layer with BatchNorm statistics")
    gamma, beta = statistics
    bounds = activation_bounds(node)
    if bounds is None:
        raise NoStatistics(f"Clip {node.name} has bounds that are not constant")
    low, high = bounds
    return clipped_normal_mean(beta, gamma, low, np.minimum(high, ceiling))


def input_mean(value: ir.Value) -> np.ndarray:
    """Per-channel E[VALUE] in the float model, from the BatchNorm statistics of the layers producing it."""
    node = value.producer()
    if node is None:
        what = "a graph input" if not value.is_initializer() else "a constant"
        raise NoStatistics(f"its input {value.name!r} is {what}, with no BatchNorm statistics")
    statistics = batchnorm_statistics(node)
    if statistics is not None:
        return statistics[1].astype(np.float64)
    if node.op_type in ("Relu", "Clip"):
        return activated_mean(node)
    activation = node.inputs[0].producer() if node.op_type == "Min" and len(node.inputs) == 2 else None
    ceiling = node.inputs[1].const_value if activation is not None else None
    if ceiling is not None and activation.op_type in ("Relu", "Clip"):
        return activated_mean(activation, ceiling.numpy().astype(np.float64).reshape(-1))
    if node.op_type == "Add":
        return input_mean(node.inputs[0]) + input_mean(node.inputs[1])
    if node.op_type in MEAN_PRESERVING_OPS:
        return input_mean(node.inputs[0])
    if node.op_type in LAYOUT_OPS:
        mean = input_mean(node.inputs[0])
        dims = list(value.shape or ())[1:]
        if value.shape is None or not all(isinstance(d, int) for d in dims) or math.prod(dims) != mean.size:
            raise NoStatistics(f"{node.op_type} {node.name} does not keep one value per channel")
        return mean
    raise NoStatistics(f"its input comes from {node.op_type} {node.name}, with no BatchNorm statistics")


def tap_weights(conv: ir.Node, kernel: tuple[int, ...]) -> np.ndarray:
    """Per kernel tap, the fraction of output positions at which it reads the input rather than padding."""
    input_shape = conv.inputs[0].shape
    spatial = list(input_shape)[2:] if input_shape is not None else []
    if len(spatial) != len(kernel) or not all(isinstance(d, int) for d in spatial):
        return np.ones(kernel)
    dims = len(kernel)
    strides = conv.attributes.get_ints("strides", [1] * dims)
    dilations = conv.attributes.get_ints("dilations", [1] * dims)
    pads = conv.attributes.get_ints("pads", [0] * (2 * dims))
    auto_pad = conv.attributes.get_string("auto_pad", "NOTSET")
    weights = np.ones(())
    for d in range(dims):
        size, k, stride, dilation = spatial[d], kernel[d], strides[d], dilations[d]
        begin, end = pads[d], pads[d + dims]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = max(0, (math.ceil(size / stride) - 1) * stride + (k - 1) * dilation + 1 - size)
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            end = total - begin
        elif auto_pad == "VALID":
            begin = end = 0
        positions = np.arange((size + begin + end - dilation * (k - 1) - 1) // stride + 1)
        reads = positions[None, :] * stride + np.arange(k)[:, None] * dilation - begin
        weights = np.multiply.outer(weights, np.mean((reads >= 0) & (reads < size), axis=1))
    return weights
