"""The integer graph's interface to float data: ONNX-layout reals in and out of a TFLite graph's integer tensors.

Data arrives as the ONNX model sees it (floats, in the ONNX model's layout). An edgeq TFLite graph holds every
rank-4 activation NHWC (the ONNX NCHW tensor transposed) unless its description records another layout for the
tensor (``describe_layouts``; e.g. the NHWC input of a Keras export stays as the ONNX model has it), so
``model_inputs`` lays inputs out as their tensors are (data already in that layout is accepted where the shape
says so; a shape that fits both, C = H = W, is taken as the ONNX layout, the documented one) and quantizes them as
TFLite's reference QUANTIZE does: float32 division, rounded half away from zero, saturated (``quantized``).
``dequantized`` turns a tensor's integers back into reals in the ONNX layout, and ``integers`` recovers a
tensor's stored integers from such reals exactly (y = (q - zp) * s in float32, so round(y / s) + zp is q).
Every target and check that feeds or reads an integer graph goes through these, so all of them see the same
integers.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from edgeq.errors import DataError
from edgeq.reference.arithmetic import round_half_away
from edgeq.tflite_format.flatbuffer import Graph, Tensor

LAYOUTS = "; layouts "  # in a graph's description: JSON {tensor name: perm} of the tensors not in the default


def describe_layouts(description: str, perms: dict[str, tuple[int, ...]]) -> str:
    """DESCRIPTION recording PERMS (tensor name -> perm: TFLite axis b holds ONNX axis perm[b]) of the tensors
    whose layout is not the default (NHWC for rank 4, the ONNX order otherwise)."""
    base = description.split(LAYOUTS)[0]
    return base + LAYOUTS + json.dumps({name: list(p) for name, p in perms.items()}) if perms else base


@functools.lru_cache(maxsize=8)
def _recorded(description: str) -> dict[str, tuple[int, ...]]:
    _, found, recorded = description.partition(LAYOUTS)
    return {name: tuple(p) for name, p in json.loads(recorded).items()} if found else {}


def tensor_perm(graph: Graph, index: int) -> tuple[int, ...]:
    """The layout of tensor INDEX: TFLite axis b holds ONNX axis perm[b]."""
    tensor = graph.tensors[index]
    recorded = _recorded(graph.description).get(tensor.name)
    if recorded is not None:
        return recorded
    return (0, 2, 3, 1) if len(tensor.shape) == 4 else tuple(range(len(tensor.shape)))


def _to_tflite_layout(array: np.ndarray, tensor: Tensor, perm: tuple[int, ...]) -> np.ndarray:
    if array.ndim == len(perm):
        moved = array.transpose(perm)
        if moved.shape[1:] == tensor.shape[1:]:
            return moved
    if array.shape[1:] != tensor.shape[1:]:
        raise DataError(
            f"input {tensor.name}: the .tflite wants [N, {', '.join(map(str, tensor.shape[1:]))}], "
            f"the data has {list(array.shape)}"
        )
    return array


def graph_batch(graph: Graph) -> int:
    """The samples one invocation of GRAPH takes: 1, or the batch an ONNX model fixed (its first input's axis 0)."""
    shape = graph.tensors[graph.inputs[0]].shape if graph.inputs else ()
    return int(shape[0]) if len(shape) > 0 else 1


def model_inputs(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's input arrays (batch first) for float FEEDS keyed by input name (or in input order)."""
    arrays = []
    values = list(feeds.values())
    for position, index in enumerate(graph.inputs):
        tensor = graph.tensors[index]
        array = feeds.get(tensor.name, values[position] if position < len(values) else None)
        if array is None:
            raise DataError(f"no data for the model's input {tensor.name}")
        array = _to_tflite_layout(np.asarray(array), tensor, tensor_perm(graph, index))
        if tensor.dtype == np.float32:
            arrays.append(array.astype(np.float32))
            continue
        arrays.append(quantized(tensor, array))
    return arrays


def quantized(tensor: Tensor, real: np.ndarray) -> np.ndarray:
    """REAL (in TENSOR's layout) quantized with TENSOR's encoding as TFLite's QUANTIZE does."""
    q = tensor.quantization
    if q is None:  # integer data (token ids): taken as they are
        return np.asarray(real).astype(tensor.dtype)
    info = np.iinfo(tensor.dtype)
    scaled = round_half_away(np.asarray(real, np.float32) / np.float32(q.scale[0]))
    return np.clip(scaled + q.zero_point[0], info.min, info.max).astype(tensor.dtype)


def dequantized(graph: Graph, index: int, array: np.ndarray) -> np.ndarray:
    """The real values of tensor INDEX in the ONNX layout."""
    tensor = graph.tensors[index]
    real = np.asarray(array, np.float32)
    if tensor.quantization is not None and tensor.dtype != np.float32:
        q = tensor.quantization
        real = (array.astype(np.float32) - np.float32(q.zero_point[0])) * np.float32(q.scale[0])
    perm = tensor_perm(graph, index)
    return real.transpose(np.argsort(perm)) if real.ndim == len(perm) else real


def float_outputs(graph: Graph, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs dequantized, in the ONNX layout."""
    return [dequantized(graph, index, array) for index, array in zip(graph.outputs, outputs, strict=True)]


def integers(graph: Graph, index: int, real: np.ndarray) -> np.ndarray:
    """The stored integers of tensor INDEX from its dequantized ONNX-layout values (floats stay floats)."""
    tensor = graph.tensors[index]
    perm = tensor_perm(graph, index)
    if real.ndim == len(perm):
        real = real.transpose(perm)
    if tensor.quantization is None or tensor.dtype == np.float32:
        return real
    return quantized(tensor, real)
