"""edgeq profile (issue 6) on the digits CNN quantized by edgeq: thread sweeps, per-op share, A/B alternation.

No timing assertions (the machine is shared): the tests check what holds whatever the load. Percentiles are in
order; there is one latency row per thread count (and per LiteRT kernel set); the per-op breakdown sums to its
total and holds every node of onnxruntime's optimized graph; the accounted share lies in (0, 1), since the
sequential executor runs every kernel inside ``session.run``; two artifacts compared are measured in strictly
alternating rounds, the same number of runs each; bad input is one line and exit 2.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import partial
from pathlib import Path

import jsonschema
import pytest
from test_cli import DIGITS, DIGITS_CALIB, assert_one_line_error, edgeq

from edgeq.data import input_specs, load_npz
from edgeq.io.onnx_model import load_model, save_model
from edgeq.measure import latency
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.onnxruntime import profile as ort_target
from edgeq.targets.tflite import profile as tflite_target
from edgeq.targets.tflite.artifact import build
from edgeq.targets.tflite.interpreters import LITERT_KERNELS


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(the digits CNN quantized by edgeq as QDQ .onnx, the same model as .tflite)."""
    folder = tmp_path_factory.mktemp("digits")
    float_model = load_model(DIGITS)
    data = load_npz(DIGITS_CALIB, input_specs(float_model))
    qdq, _ = Pipeline(Recipe(), progress=False).run(float_model, data)
    qdq_path = save_model(qdq, folder / "digits.qdq.onnx")
    tflite_path = folder / "digits.tflite"
    tflite_path.write_bytes(build(qdq).data)
    return qdq_path, tflite_path


def _assert_latency_row(row: dict, runs: int) -> None:
    assert row["runs"] == runs
    assert 0 < row["min"] <= row["p50"] <= row["p90"] <= row["p99"] <= row["max"]
    assert row["min"] <= row["mean"] <= row["max"] and row["stdev"] >= 0
    assert 0 <= row["spread"] <= (row["max"] - row["min"]) / row["p50"]


def test_onnxruntime_thread_sweep_and_per_op_share(digits):
    qdq_path, _ = digits
    result = ort_target.profile(qdq_path, runs=5, warmup=2, threads=[1, 2])
    assert [row["threads"] for row in result["sweep"]] == [1, 2]
    for row in result["sweep"]:
        _assert_latency_row(row, runs=5)
    assert result["threads"] == 1 and result["latency_ms"] == {
        k: v for k, v in result["sweep"][0].items() if k != "threads"
    }

    per_op = result["per_op"]
    assert per_op["threads"] == 1 and per_op["runs"] == 10  # at least 10 profiled runs
    assert sum(row["ms"] for row in per_op["by_node"]) == pytest.approx(per_op["sum_ms"])
    assert sum(per_op["by_op_type"].values()) == pytest.approx(per_op["sum_ms"])
    share = per_op["fraction_of_latency"]
    assert 0 < share < 1 and share == pytest.approx(per_op["sum_ms"] / per_op["profiled_latency_ms"])
    assert (per_op["warning"] is None) == (share >= ort_target.ACCOUNTED_SHARE_BAR)
    rest = per_op["outside_kernels_ms"]
    assert rest["in_onnxruntime"] > 0 and rest["outside_onnxruntime"] > 0  # model_run encloses the kernels
    assert per_op["unprofiled_latency_ms"] == result["sweep"][0]["mean"]

    # every node of ORT's optimized graph ran in the profiled session, and the integer ones are flagged so
    fusion = result["fusion"]
    assert Counter(row["op_type"] for row in per_op["by_node"]) == Counter(fusion["op_counts"])
    assert {row["op_type"] for row in per_op["by_node"] if row["integer"]} == set(fusion["quantized_kernels"])
    assert "QLinearConv" in fusion["quantized_kernels"]

    text = ort_target.format_profile(result)
    assert f"= {share:.0%} accounted" in text and ("WARNING" in text) == (per_op["warning"] is not None)


def test_litert_rows_per_kernel_set_and_thread_count(digits):
    _, tflite_path = digits
    result = tflite_target.profile(tflite_path, runs=4, warmup=1, threads=[1, 2])
    assert [(row["kernels"], row["threads"]) for row in result["sweep"]] == [
        (kernels, threads) for kernels in LITERT_KERNELS for threads in (1, 2)
    ]
    for row in result["sweep"]:
        _assert_latency_row(row, runs=3 if row["kernels"] == "reference" else 4)
    assert list(result["latency_ms"]) == list(LITERT_KERNELS)  # the first thread count's rows
    assert result["ops"]["CONV_2D"] + result["ops"]["DEPTHWISE_CONV_2D"] == 4
    assert "reference kernels, 2" in tflite_target.format_profile(result)


def test_alternation_order_rounds_and_ratio(digits):
    calls: list[str] = []

    def make(name: str, threads: int):
        return (lambda: calls.append(name)), name

    result = latency.alternate(
        "A", partial(make, "a"), "B", partial(make, "b"), threads=[1], runs=20, warmup=3
    )
    rounds, per_round = result["rounds"], result["runs_per_round"]
    assert (rounds, per_round) == (10, 2)
    assert "".join(calls) == "aaabbb" + ("aa" + "bb") * rounds  # warm-up, then A B A B ...

    qdq_path, tflite_path = digits  # a real mixed pair: onnxruntime against LiteRT
    result = latency.alternate(
        str(qdq_path), partial(ort_target.runner, qdq_path),
        str(tflite_path), partial(tflite_target.runner, tflite_path),
        threads=[1, 2], runs=12, warmup=1,
    )  # fmt: skip
    assert result["a"]["runtime"].startswith("onnxruntime") and result["b"]["runtime"].startswith("LiteRT")
    assert [row["threads"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        runs = result["rounds"] * result["runs_per_round"]
        _assert_latency_row(row["a_ms"], runs)
        _assert_latency_row(row["b_ms"], runs)
        assert 0 < row["ratio_p10"] <= row["ratio"] <= row["ratio_p90"]


def test_cli_sweep_compare_and_json(digits):
    qdq_path, tflite_path = digits
    result = edgeq("profile", qdq_path, "--threads", "1-2", "--runs", "5", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["threads"] for row in data["sweep"]] == [1, 2]
    assert data["analysis"]["summary"]["macs"] == 230880
    assert 0 < data["per_op"]["fraction_of_latency"] < 1

    result = edgeq(
        "profile", qdq_path, "--compare", tflite_path, "--threads", "1,2", "--runs", "10", "--json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["a"]["artifact"] == str(qdq_path) and data["b"]["artifact"] == str(tflite_path)
    assert [row["threads"] for row in data["rows"]] == [1, 2]
    assert all(row["a_ms"]["runs"] == row["b_ms"]["runs"] == 10 for row in data["rows"])

    result = edgeq("profile", tflite_path, "--compare", qdq_path, "--runs", "4", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "A/B" in result.stdout and "LiteRT" in result.stdout.splitlines()[0]


def test_bad_profile_inputs_are_one_line_errors(digits, tmp_path):
    qdq_path, _ = digits
    too_many = str(4 * (os.cpu_count() or 1) + 1)
    for threads, pattern in [
        ("0", "between 1 and"),
        (too_many, "between 1 and"),
        ("two", "give thread counts"),
        ("1,,2", "give thread counts"),
        ("3-1", "the range 3-1 is empty"),
    ]:
        assert_one_line_error(edgeq("profile", qdq_path, "--threads", threads), pattern)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all")
    assert_one_line_error(edgeq("profile", qdq_path, "--compare", garbage), "garbage.tflite: not a TFLite flatbuffer \\(no TFL3 file identifier\\)")
    assert_one_line_error(edgeq("profile", qdq_path, "--compare", tmp_path / "gone.onnx"), "does not exist")
    not_a_model = edgeq("profile", qdq_path, "--compare", DIGITS_CALIB)
    assert_one_line_error(not_a_model, "reads .onnx, .ort and .tflite")


def test_a_tflite_with_token_ids_and_an_op_tflite_micro_lacks_is_profiled_in_litert(tmp_path):
    """Token ids are fed as small integers a table accepts (not the whole int32 range, which LiteRT's GATHER
    refuses), and TFLite Micro's part of the profile says it cannot run the model instead of failing it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    import edgeq as api

    table = helper.make_tensor("table", TensorProto.FLOAT, [20, 8], np.linspace(-1, 1, 160).tolist())
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("Gelu", ["e"], ["y"])],
        "ids_gelu",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [table],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), tmp_path / "ids_gelu.onnx")
    np.savez(tmp_path / "ids.npz", ids=np.random.default_rng(0).integers(0, 20, (8, 4)).astype(np.int64))
    api.convert(tmp_path / "ids_gelu.onnx", tmp_path / "ids.npz", outdir=tmp_path / "out", targets=["tflite"])
    result = edgeq("profile", tmp_path / "out" / "ids_gelu.tflite", "--runs", "5")
    assert result.returncode == 0, result.stderr
    assert "TFLite Micro: cannot run it" in result.stdout and "GELU" in result.stdout
    printed = json.loads(edgeq("profile", tmp_path / "out" / "ids_gelu.tflite", "--runs", "5", "--json").stdout)
    schema = json.loads((Path(__file__).parents[1] / "docs" / "schemas" / "profile.schema.json").read_text())
    jsonschema.validate(printed, schema, cls=jsonschema.Draft202012Validator)
    assert "GELU" in json.dumps(printed)
