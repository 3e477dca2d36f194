"""Per-layer sensitivity (edgeq.mixed.sensitivity) on the digits CNN, and Hutchinson's trace against the exact one."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest
from conftest import REPO

from edgeq.api.inputs import data_of
from edgeq.io.onnx_model import load_model
from edgeq.mixed.hessian import hutchinson_trace, layer_trace, probe_model
from edgeq.mixed.layers import with_choices
from edgeq.mixed.sensitivity import measure_sensitivity
from edgeq.mixed.workbench import Workbench, run_model, worst_sqnr
from edgeq.quantization.plan import WEIGHT_INPUT
from edgeq.quantization.recipe import Recipe

DIGITS = REPO / "models" / "digits_cnn.onnx"
# Bypassing one layer's quantization can cost a little where its error happened to cancel another layer's; on
# the digits CNN the largest such loss would be a few hundredths of a dB, int8 -> int4 costs 3 to 15 dB.
ORDER_TOLERANCE_DB = 0.5


@pytest.fixture(scope="module")
def bench() -> Workbench:
    model = load_model(DIGITS)
    data = data_of(REPO / "models" / "digits_calib.npz", model)
    return Workbench.prepare(model, data, Recipe(activation_type="auto"), samples=64)


@pytest.fixture(scope="module")
def table(bench):
    return measure_sensitivity(bench, address="serial")


def test_every_weighted_layer_is_measured_and_finer_is_better(bench, table):
    weighted = [n.name for n in bench.calibrated.model.graph if n.op_type in WEIGHT_INPUT]
    assert [layer.name for layer in table.layers] == weighted and len(weighted) == 5
    for layer in table.layers:
        sqnr = table.sqnr_db[layer.name]
        assert sqnr["float"] >= sqnr["int8"] - ORDER_TOLERANCE_DB, layer
        assert sqnr["int8"] >= sqnr["int4"] - ORDER_TOLERANCE_DB, layer
        assert table.omega[layer.name]["int4"] > table.omega[layer.name]["int8"] > table.omega[layer.name]["float"] == 0
    rows = table.to_dict()["layers"]
    assert rows[0]["weight_bytes"] == {"float": 4 * 216, "int8": 216, "int4": 108}


def test_float_edits_are_the_pipeline_builds(bench, table):
    """A float layer made by editing the base model computes what the pipeline's build with that layer float
    computes (on the digits CNN, where no other tensor's range depends on the layer's precision)."""
    for layer in table.layers:
        built = bench.build({layer.name: "float"})
        assert table.sqnr_db[layer.name]["float"] == pytest.approx(built.sqnr_db, abs=1e-6), layer


def test_int8_edit_is_the_pipeline_build(bench, table):
    """Requantizing a layer at the base's own 8 bits gives the base model back: the edit reuses the pipeline's
    InsertQDQPass, scales and rounding, not a copy of them."""
    name = table.layers[2].name
    edited = with_choices(bench.base, bench.calibrated.model, {name: "int8"}, bench.recipe)
    assert worst_sqnr(bench.reference, run_model(edited, bench.feeds)) == pytest.approx(table.base_sqnr_db, abs=1e-9)


@pytest.mark.slow
def test_ray_tasks_give_the_serial_table(bench, table):
    """The task functions run in Ray's workers (a local embedded instance) and give the serial measurements."""
    pytest.importorskip("ray")
    on_ray = measure_sensitivity(bench, ("int4",), address=None)
    assert {k: v["int4"] for k, v in on_ray.sqnr_db.items()} == {k: v["int4"] for k, v in table.sqnr_db.items()}
    assert on_ray.hessian_trace == table.hessian_trace


def _matmul_model(k: int, n: int, w: np.ndarray) -> ir.Model:
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["N", k]))
    weight = ir.Value(name="w", const_value=ir.tensor(w, name="w"))
    weight.shape, weight.dtype = ir.Shape(w.shape), ir.DataType.FLOAT
    node = ir.node("MatMul", [x, weight], name="layer")
    node.outputs[0].name, node.outputs[0].dtype = "y", ir.DataType.FLOAT
    graph = ir.Graph([x], [node.outputs[0]], nodes=[node], initializers=[weight], opset_imports={"": 17})
    return ir.Model(graph, ir_version=10)


def test_hutchinson_trace_matches_the_exact_trace_of_a_linear_layer():
    """y = x W: J^T J is block-diagonal, N copies of X^T X, so tr(J^T J) = N sum x^2 exactly, and one Rademacher
    probe of A = J^T J has variance 2 sum_{i != j} A_ij^2 = 2 N sum_{k != k'} (X^T X)_kk'^2."""
    rng = np.random.default_rng(1)
    samples, k, n, probes = 16, 6, 4, 200
    x = rng.normal(size=(samples, k)).astype(np.float32)
    w = rng.normal(size=(k, n)).astype(np.float32)
    gram = x.astype(np.float64).T @ x
    exact = n * np.trace(gram)
    std = np.sqrt(2 * n * (np.sum(gram**2) - np.sum(np.diag(gram) ** 2)) / probes)

    estimate, error = hutchinson_trace(lambda v: [x @ v], w, probes=probes, eps=0.01)
    assert abs(estimate - exact) < 4 * std and error == pytest.approx(std, rel=0.3)

    model, w0 = probe_model(_matmul_model(k, n, w), "layer")
    result = layer_trace((model, w0, 0), {"feeds": {"x": x}, "probes": probes})
    assert abs(result["trace_per_weight"] - 2 * exact / samples / w.size) < 4 * 2 * std / samples / w.size


def test_sensitivity_command_writes_the_table_and_plots(tmp_path):
    from click.testing import CliRunner

    from edgeq.cli import main

    args = ["sensitivity", DIGITS, "--calib", REPO / "models" / "digits_calib.npz", "-o", tmp_path, "--samples", "16",
            "--ray-address", "serial", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "sensitivity.json").read_text())
    assert len(report["layers"]) == 5 and report["samples"] == 16 and report["base_precision"] == "int8"
    assert (tmp_path / "sensitivity.png").read_bytes().startswith(b"\x89PNG")
