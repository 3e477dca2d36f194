"""The ONNX backend node tests through edgeq.quantize and edgeq.convert(targets=["tflite"]), in-process.

Every float32-input node test (tests/node_suite_cases.py generates and caches them) must convert, stop with a
one-line ``unsupported: <op> at <node>: <reason>`` refusal, or stop with a one-line error about its data or its
opset (the classification and why: node_suite_cases' docstring); anything else is a crash and fails. The other
cases (an input that is not a float32 tensor) are not test cases here: benchmarks/bench_node_tests.py counts them
by reason. All float cases together take about 20 s on one
core, inside the test budget: CI runs every one (benchmarks/bench_node_tests.py prints the counts).

Crashes inside targets/ (the TFLite lowering and its validation, changed by other sessions) are listed in
node_suite_cases.ROUTED by signature and expected to fail until fixed there. The crash classes fixed on the quantize side have
their regression tests, on small graphs with the pattern, in tests/test_unusual_graphs.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from node_suite_cases import NodeCase, Outcome, _classify, node_cases, routed_to, run_case

import edgeq
from edgeq.errors import DataError, ModelError, UnsupportedError, unsupported

CASES = node_cases()
FLOAT_CASES = [c for c in CASES if c.skip is None]


@pytest.mark.parametrize("case", FLOAT_CASES, ids=[c.name for c in FLOAT_CASES])
def test_node_case_converts_or_refuses_in_one_line(case: NodeCase, tmp_path):
    outcome = run_case(case, tmp_path / "out")
    if outcome.kind == "crash":
        routed = routed_to(outcome)
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
