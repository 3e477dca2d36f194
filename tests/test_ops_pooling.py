"""MaxPool / AveragePool with ceil_mode, 1-D pools and GlobalMaxPool: lowered to MAX_POOL_2D / AVERAGE_POOL_2D
(the kernels are test_reference_ops_data.py's), checked end to end against ONNX Runtime's QDQ model and bit
for bit in the three integer runtimes.

ceil_mode adds windows that reach past the padded input; the lowering pads the end by that overhang (SAME
where the pads are SAME's, else an explicit PADV2 of the lowest integer for MAX). The overhang is checked
against the output shapes ONNX Runtime computes, including the sizes where the last window would start inside
the end padding (ONNX drops it).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_target_tflite import _model, _quantize, _scaled_input, check_against_onnxruntime
from tflite_cases import assert_bit_exact

from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session
from edgeq.reference.interface import float_outputs, model_inputs
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.lower.pooling import ceil_overhang
from edgeq.tflite_format.flatbuffer import read, write


def _ort_pool_length(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[kernel], strides=[stride], pads=list(pads),
                            ceil_mode=1)  # fmt: skip
    graph = helper.make_graph(
        [node], "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return session(proto).run(None, {"x": np.zeros((1, 1, size), np.float32)})[0].shape[-1]


@pytest.mark.parametrize("kernel, stride", [(1, 2), (2, 2), (3, 2), (2, 3), (3, 3), (5, 2)])
def test_ceil_overhang_gives_onnx_runtimes_window_count(kernel, stride):
    """(n + pads + overhang - k) / s + 1 windows, as ONNX Runtime counts them with ceil_mode=1 (its last window
    never starts inside the end padding: n = 4, k = 1, s = 2 has 2 windows, not 3)."""
    for size in range(max(kernel - 2, 1), 12):
        for pads in [(0, 0), (1, 0), (0, 1), (1, 1)]:
            if size + sum(pads) < kernel or max(pads) >= kernel:
                continue
            windows = (size + sum(pads) + ceil_overhang(size, kernel, stride, pads) - kernel) // stride + 1
            assert windows == _ort_pool_length(size, kernel, stride, pads), (size, pads)
    assert ceil_overhang(4, 1, 2, (0, 0)) == 0 and ceil_overhang(5, 2, 3, (1, 1)) == 0


def _pool(op, inputs, opset=17, **attributes):
    nodes, inits = _scaled_input([helper.make_node(op, ["m"], ["y"], **attributes)], [])
    return _model(nodes, inputs, "y", inits, opset=opset)


@pytest.mark.parametrize(
    "size, kernel, stride, pads, ops",
    [
        (46, 3, 2, [0, 0, 0, 0], {"MUL": 1, "MAX_POOL_2D": 1}),  # mtcnn_onet's pool1: the overhang is SAME's
        (9, 2, 2, [0, 0, 0, 0], {"MUL": 1, "MAX_POOL_2D": 1}),  # mtcnn_onet's pool3 on an odd size
        (8, 3, 2, [1, 1, 1, 1], {"MUL": 1, "PADV2": 1, "MAX_POOL_2D": 1}),  # pads plus an overhang: PADV2
        (7, 3, 2, [1, 1, 1, 1], {"MUL": 1, "MAX_POOL_2D": 1}),  # ceil changes nothing; SAME pads
    ],
)
def test_max_pool_ceil_mode(size, kernel, stride, pads, ops):
    inputs = [("x", [1, 3, size, size])]
    proto = _pool("MaxPool", inputs, kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=pads, ceil_mode=1)
    check_against_onnxruntime(proto, inputs, samples=2, start=("m",))
    assert lower(_quantize(proto, np.random.default_rng(0), inputs)).ops == ops


def test_max_pool_ceil_mode_where_the_last_window_is_mostly_padding():
    """Size 6, kernel 3, stride 2, pads (2, 0): the last ceil window covers one input pixel and two of the
    overhang's -128s; it must equal that pixel, and ONNX's -inf padding must never win."""
    inputs = [("x", [1, 2, 6, 6])]
    proto = _pool("MaxPool", inputs, kernel_shape=[3, 3], strides=[2, 2], pads=[2, 2, 0, 0], ceil_mode=1)
    assert ceil_overhang(6, 3, 2, (2, 0)) == 1
    check_against_onnxruntime(proto, inputs, samples=3, start=("m",))


def test_max_pool_ceil_mode_drops_a_window_that_would_start_in_the_padding():
    """Size 5 (and 4), kernel 2, stride 3, pads (1, 1): ceil gives 3 windows, but the third would start at 6,
    in the end padding: ONNX Runtime and opset 22 compute 2. A model whose (pre-22) shape inference declared 3 is
    refused in one line rather than lowered with shapes no runtime computes."""
    inputs = [("x", [1, 3, 5, 4])]
    attributes = dict(kernel_shape=[2, 2], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1)
    check_against_onnxruntime(
        _pool("MaxPool", inputs, opset=22, **attributes), inputs, samples=2, start=("m",)
    )
    qdq = _quantize(_pool("MaxPool", inputs, **attributes), np.random.default_rng(0), inputs)
    with pytest.raises(EdgeqError, match=r"^unsupported: MaxPool at node_1: ceil_mode output \[3, 3\] is declared "
                       r"where ONNX Runtime computes \[2, 2\]"):  # fmt: skip
        lower(qdq)


def test_average_pool_ceil_mode_counts_only_the_input():
    """An overhang that is exactly SAME's padding: AVERAGE_POOL_2D SAME divides by the pixels inside the image,
    as ONNX Runtime's ceil-mode AveragePool does."""
    inputs = [("x", [1, 3, 9, 7])]
    proto = _pool("AveragePool", inputs, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    check_against_onnxruntime(proto, inputs, samples=2, start=("m",))
    average = next(op for op in lower(_quantize(proto, np.random.default_rng(0), inputs)).graph.operators
                   if op.opcode == "AVERAGE_POOL_2D")  # fmt: skip
    assert average.options["Padding"] == "SAME"


def test_average_pool_ceil_mode_with_count_include_pad_follows_the_float_operator():
    """Without pads count_include_pad=1 counts only the input in ONNX Runtime's float AveragePool (the overhang is
    not a pad), and so does the lowering. ONNX Runtime's fused QLinearAveragePool, which its default optimizations
    make of the QDQ model, divides the last window by the whole kernel instead (measured, onnxruntime 1.32:
    half the value on a 9-wide row, kernel 2, stride 2): the comparison is with the unfused QDQ model."""
    inputs = [("x", [1, 2, 1, 9])]
    proto = _pool(
        "AveragePool", inputs, kernel_shape=[1, 2], strides=[1, 2], ceil_mode=1, count_include_pad=1
    )
    rng = np.random.default_rng(0)
    qdq = _quantize(proto, rng, inputs)
    graph = read(write(lower(qdq).graph))
    x = rng.uniform(0, 1, (1, 2, 1, 9)).astype(np.float32)
    [ints] = assert_bit_exact(write(graph), model_inputs(graph, {"x": x}))
    tflite = float_outputs(graph, [ints])[0]
    onnx_out = session(to_proto(qdq), optimization="disabled").run(None, {"x": x})[0]
    scale = graph.tensors[graph.outputs[0]].quantization.scale[0]
    assert tflite.shape == onnx_out.shape == (1, 2, 1, 5)
    assert np.abs(tflite - onnx_out).max() <= 1.001 * scale


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
         "pads [(1, 2), (1, 2)] are not TFLite SAME padding and the count excludes them"),
        ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1},
         "ceil_mode average pooling that counts its pads (not the overhang)"),
        ({"kernel_shape": [4, 4], "strides": [3, 3], "ceil_mode": 1, "count_include_pad": 1},
         "pads [(0, 2), (0, 2)] are not TFLite SAME padding and the count excludes them"),
        ({"kernel_shape": [2, 2], "strides": [2, 2], "dilations": [2, 2]}, "dilated pooling"),
    ],
)  # fmt: skip
def test_average_pool_refusals_are_one_line(attributes, message):
    inputs = [("x", [1, 3, 8, 8])]
    qdq = _quantize(_pool("AveragePool", inputs, opset=19, **attributes), np.random.default_rng(0), inputs)
    with pytest.raises(EdgeqError, match=r"^unsupported: AveragePool at node_1: ") as error:
        lower(qdq)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "op, attributes",
    [
        ("MaxPool", {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
        ("MaxPool", {"kernel_shape": [2], "strides": [2], "ceil_mode": 1}),
        ("AveragePool", {"kernel_shape": [3], "strides": [1], "pads": [1, 1], "count_include_pad": 1}),
        ("AveragePool", {"kernel_shape": [4], "strides": [2]}),
    ],
)
def test_pooling_1d(op, attributes):
    inputs = [("x", [1, 4, 15])]
    check_against_onnxruntime(_pool(op, inputs, **attributes), inputs, samples=2, start=("m",))


@pytest.mark.parametrize("shape", [[1, 3, 5, 4], [1, 4, 9]])
def test_global_max_pool(shape):
    inputs = [("x", shape)]
    proto = _pool("GlobalMaxPool", inputs)
    check_against_onnxruntime(proto, inputs, samples=2, start=("m",))
    ops = lower(_quantize(proto, np.random.default_rng(0), inputs)).ops
    assert ops["MAX_POOL_2D"] == 1 and "TRANSPOSE" not in ops or len(shape) == 3
