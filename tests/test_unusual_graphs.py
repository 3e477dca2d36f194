"""Graphs with the patterns the ONNX backend node tests (tests/test_onnx_node_suite.py) crashed edgeq's quantize side
on, each now quantizing or refused in one line: scalar inputs, inputs without a shared batch axis, constants
holding infinities, empty tensors, an Identity between two graph outputs, float passes on models with bool, empty
or sequence outputs, and a source model's own QuantizeLinear with a scale computed at run time.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeq
from edgeq.calibration.observers import TensorObserver
from edgeq.data import ArrayData, CallableData, InputSpec
from edgeq.errors import DataError
from edgeq.quantization.plan import finite_range


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _x(shape):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)


def test_a_scalar_input_is_one_data_error_line():
    """Was an IndexError: a rank-0 input has no axis to stack samples on (test_pow_bcast_scalar, test_clip)."""
    specs = [InputSpec("x", (3,), np.dtype(np.float32)), InputSpec("y", (), np.dtype(np.float32))]
    data = {"x": np.ones(3, np.float32), "y": np.float32(2.0)}
    with pytest.raises(
        DataError, match=r"^calibration data: the model's input 'y' has no axes .*batch"
    ) as exc:
        ArrayData(data, specs, "calibration data")
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="^samples: the model's input 'y' has no axes"):
        CallableData(lambda: [data], specs, what="samples")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])
    model = _model([helper.make_node("Pow", ["x", "y"], ["z"])], [_x([3]), y], [z])
    with pytest.raises(DataError, match="input 'y' has no axes"):
        edgeq.quantize(model, data)


def test_inputs_without_a_shared_batch_axis_are_one_data_error_line():
    """Node tests pass one call's arguments: a broadcast operand y [5] next to x [3, 4, 5] (test_add_bcast) is not
    samples on a shared first axis; said in one line instead of comparing sample counts that mean nothing."""
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 4, 5])
    model = _model([helper.make_node("Add", ["x", "y"], ["z"])], [_x([3, 4, 5]), y], [z])
    data = {"x": np.ones((3, 4, 5), np.float32), "y": np.ones(5, np.float32)}
    with pytest.raises(
        DataError, match=r"no shared batch axis \(first dimensions \{'x': 3, 'y': 5\}\)"
    ) as exc:
        edgeq.quantize(model, data)
    assert "\n" not in str(exc.value)
    symbolic = [InputSpec("x", ("N", 4), np.dtype(np.float32)), InputSpec("y", (5,), np.dtype(np.float32))]
    with pytest.raises(DataError, match="different sample counts"):  # a batch axis to check the data against
        ArrayData(
            {"x": np.ones((3, 4), np.float32), "y": np.ones(5, np.float32)}, symbolic, "calibration data"
        )


def test_constants_with_infinities_get_finite_encodings():
    """Was 'cannot convert float NaN to integer': an attention mask constant holding -inf (the expanded Attention
    tests) made its group's range infinite."""
    mask = numpy_helper.from_array(np.array([[0.0, -np.inf, 0.5, -np.inf]], np.float32), "mask")
    model = _model(
        [helper.make_node("Add", ["x", "mask"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        [_x([2, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])],
        [mask],
    )
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    qdq = edgeq.quantize(model, x).model
    scales = [numpy_helper.to_array(t) for t in qdq.graph.initializer if "scale" in t.name]
    assert scales and all(np.isfinite(s).all() and (s > 0).all() for s in scales)


def test_finite_range_ignores_nonfinite_and_empty_constants():
    assert finite_range(np.array([-np.inf, 1.0, np.nan, -2.0], np.float32)) == (-2.0, 1.0)
    assert finite_range(np.zeros((0, 3), np.float32)) == (0.0, 0.0)
    assert finite_range(np.array([np.inf], np.float32)) == (0.0, 0.0)


def test_an_empty_tensor_gets_a_range():
    """Was 'observer has seen no finite values': a Split into an empty part (the expanded RotaryEmbedding tests)."""
    observer = TensorObserver()
    observer.update(np.zeros((2, 0), np.float32))
    assert observer.range("percentile") == (0.0, 1e-8)
    observer.update(np.array([np.nan, np.inf], np.float32))
    assert observer.range("minmax") == (0.0, 1e-8)
    split = numpy_helper.from_array(np.array([4, 0], np.int64), "split")
    model = _model(
        [
            helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1),
            helper.make_node("Concat", ["a", "b"], ["y"], axis=1),
        ],
        [_x([2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [split],
    )
    edgeq.quantize(model, np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32))


# ---- the preprocessing and the optional passes ---------------------------------------------------------------

RNG = np.random.default_rng(0)
X4 = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)


def _conv_model(tail, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    """x [N, 3, 4, 4] -> Conv 1x1 (4 channels) -> Relu -> Conv 1x1 -> c, then TAIL nodes."""
    weights = [
        numpy_helper.from_array(RNG.normal(size=(4, 3, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(RNG.normal(size=(4, 4, 1, 1)).astype(np.float32), "w2"),
    ]
    head = [
        helper.make_node("Conv", ["x", "w1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c"]),
    ]
    return _model(head + tail, [_x(["N", 3, 4, 4])], outputs, [*weights, *initializers], opset)


def _out(name, shape=("N", 4, 4, 4), dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_an_identity_between_two_graph_outputs_keeps_both():
    """onnx_ir's IdentityEliminationPass merged c and d = Identity(c) into one value listed twice as 'd', and the
    float model's output c was gone (convert then failed on 'Invalid output name: c')."""
    model = _conv_model([helper.make_node("Identity", ["c"], ["d"])], [_out("c"), _out("d")])
    qdq = edgeq.quantize(model, X4).model
    assert [o.name for o in qdq.graph.output] == ["c", "d"]


@pytest.mark.parametrize(
    "options",
    [
        {"passes": ["equalize"]},
        {"passes": ["range-search"]},
        {"dyadic_bits": 8},
    ],
    ids=["equalize", "range-search", "dyadic"],
)
def test_float_passes_measure_only_float_outputs(options):
    """Passes that compare the model's outputs (equalize's float change, range search's loss, the dyadic pass's
    SQNR) met a bool output (test_greater), an empty one (test_shape_start_greater_than_end) and a sequence
    (test_split_to_sequence_nokeepdims): they measure the non-empty float tensors and skip the rest."""
    constants = [
        numpy_helper.from_array(np.array(v, np.int64), n) for v, n in (([2], "s"), ([2], "e"), ([1], "ax"))
    ]
    model = _conv_model(
        [
            helper.make_node("Greater", ["c", "zero"], ["positive"]),
            helper.make_node("Slice", ["c", "s", "e", "ax"], ["nothing"]),
            helper.make_node("SplitToSequence", ["c", "sizes"], ["parts"], axis=1),  # parts of unequal shapes
        ],
        [_out("c"), _out("positive", dtype=TensorProto.BOOL), _out("nothing", ("N", 0, 4, 4))]
        + [helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.float32(0.0), "zero"), numpy_helper.from_array(np.array([1, 3]), "sizes")]
        + constants,
    )
    edgeq.quantize(model, X4, **options)


def test_bias_correction_of_a_model_without_layers():
    """Empirical bias correction ran a segment with no outputs when no layer had quantized weights."""
    model = _model(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        [_x(["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.full(4, 0.5, np.float32), "k")],
    )
    edgeq.quantize(model, RNG.normal(size=(2, 4)).astype(np.float32), passes=["bias-correction"])


def test_dyadic_leaves_a_run_time_quantize_scale_alone():
    """The model's own QuantizeLinear with a scale computed at run time (test_dynamicquantizelinear_expanded) is
    not one of edgeq's encodings: the dyadic pass read its scale as a constant and crashed."""
    model = _conv_model(
        [
            helper.make_node("ReduceMax", ["c"], ["top"], keepdims=0),
            helper.make_node("Div", ["top", "levels"], ["scale"]),
            helper.make_node("QuantizeLinear", ["c", "scale"], ["q"]),
        ],
        [_out("c"), _out("q", dtype=TensorProto.UINT8)],
        [numpy_helper.from_array(np.float32(255.0), "levels")],
    )
    report = edgeq.quantize(model, X4, dyadic_bits=8).report
    assert any(
        isinstance(v, dict) and "sqnr_db_on_calibration_batch_after" in v for v in report["stages"].values()
    )


def test_dyadic_cost_runs_the_qdq_model_unfused():
    """onnxruntime's full optimizations fuse a QDQ AveragePool with dilations into a QLinearAveragePool that fails
    to load (test_averagepool_2d_dilations); the dyadic pass's SQNR runs the Q/DQ nodes as they are."""
    model = _conv_model(
        [helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[2, 2], dilations=[2, 2])],
        [_out("p", ("N", 4, 2, 2))],
        opset=19,
    )
    edgeq.quantize(model, X4, dyadic_bits=8)
