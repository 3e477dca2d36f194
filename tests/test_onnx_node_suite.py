"""The ONNX backend node tests through edgeq.quantize and edgeq.convert(targets=["tflite"]), in-process.

Every float32-input node test (tests/node_suite_cases.py generates and caches them) must convert, stop with a
one-line ``unsupported: <op> at <node>: <reason>`` refusal, or stop with a one-line error about its data or its
opset (the classification and why: node_suite_cases' docstring); anything else is a crash and fails. The other
cases are skipped with their reason (``pytest -rs`` counts them). All float cases together take about 20 s on one
core, inside the test budget: CI runs every one (benchmarks/bench_node_tests.py prints the counts).

Crashes inside targets/ (the TFLite lowering and its validation, changed by other sessions) are listed in
``ROUTED`` by signature and expected to fail until fixed there. Below, a regression test for each crash class
fixed on the quantize side, on a small graph with the pattern.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from node_suite_cases import NodeCase, Outcome, _classify, node_cases, run_case
from onnx import TensorProto, helper, numpy_helper

import edgeq
from edgeq.calibration.observers import TensorObserver
from edgeq.data import ArrayData, CallableData, InputSpec
from edgeq.errors import DataError, ModelError, UnsupportedError, unsupported
from edgeq.quantization.plan import finite_range

CASES = node_cases()

# Crash signatures in targets/ (not the quantize side), routed to the lead: substring of the crash line -> where.
ROUTED = {
    "Cannot set tensor: Dimension mismatch": "targets/tflite/artifact.py validate_on_data feeds one sample per "
    "invocation, but the .tflite keeps the model's fixed batch dimension (> 1)",
    "lower/windows.py": "targets/tflite/lower/windows.py: AveragePool/MaxPool over one spatial axis (rank-3 input)",
    "invalid TFLite model: op": "the TFLite lowering emits a graph its validator rejects (pooling over 3 spatial axes)",
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case_converts_or_refuses_in_one_line(case: NodeCase, tmp_path):
    if case.skip is not None:
        pytest.skip(case.skip)
    outcome = run_case(case, tmp_path / "out")
    if outcome.kind == "crash":
        routed = next((where for sign, where in ROUTED.items() if sign in outcome.message), None)
        if routed is not None:
            pytest.xfail(f"routed: {routed}")
    assert outcome.kind != "crash", (
        f"{case.name} ({case.op_type}): crash in {outcome.step}: {outcome.message}"
    )


def test_cases_cover_the_whole_suite_and_are_cached():
    assert len(CASES) > 1800 and len({c.name for c in CASES}) == len(CASES)
    runnable = [c for c in CASES if c.skip is None]
    assert len(runnable) > 800
    assert all(c.model_path.is_file() for c in runnable)
    case = next(c for c in runnable if c.name == "test_relu")
    inputs = case.inputs()
    assert list(inputs) == ["x"] and inputs["x"].dtype == np.float32 and inputs["x"].shape == (3, 4, 5)
    assert next(c for c in CASES if c.name == "test_add_uint8").skip == "uint8 input"


# ---- the classification ---------------------------------------------------------------------------------------

RELU = NodeCase("test_relu", "Relu", False, 14, None)


def test_refusal_form_counts_and_anything_else_is_a_crash():
    refused = _classify(RELU, unsupported(("Relu", "r"), "no kernel", "no-lowering"), "convert", True)
    assert (refused.kind, refused.code) == ("refused", "no-lowering")
    assert _classify(RELU, UnsupportedError("relu is not supported"), "convert", True).kind == "crash"
    assert _classify(RELU, UnsupportedError("unsupported: Relu at r: a\nb"), "convert", True).kind == "crash"
    assert (
        _classify(
            RELU, ModelError("m.onnx: opset 26 is not supported (edgeq supports 11..21)"), "quantize", False
        ).kind
        == "opset"
    )
    assert (
        _classify(RELU, ModelError("m.onnx is not a valid ONNX model: x"), "quantize", False).kind == "crash"
    )
    nan = _classify(
        RELU, DataError("calibration data: input 'x' contains NaN or Inf values"), "quantize", False
    )
    assert (nan.kind, nan.code) == ("user-error", "NaN or Inf inputs")


def test_a_float_model_failure_is_the_data_only_when_onnxruntime_fails_too():
    failed = DataError("the float model failed on the calibration data: boom")
    assert _classify(RELU, failed, "quantize", False).kind == "crash"  # onnxruntime runs test_relu


def test_a_traceback_is_a_crash(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(edgeq, "quantize", broken)
    outcome = run_case(next(c for c in CASES if c.name == "test_relu"), tmp_path)
    assert outcome == Outcome("crash", "quantize", None, outcome.message, False)
    assert outcome.message.startswith("KeyError: 'internal' [tests/test_onnx_node_suite.py:")


# ---- regressions: the crash classes the suite found on the quantize side -----------------------------------------


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
