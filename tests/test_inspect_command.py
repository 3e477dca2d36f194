"""`edgeq inspect` on every bundled and corpus model and on a converted .tflite: the facts it prints are the file's
(read here with onnx and LiteRT, not with edgeq), its --json validates against docs/schemas/inspect.schema.json,
and a broken file is one line and exit status 2."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import CORPUS, REPO
from onnx import numpy_helper, shape_inference

from edgeq.cli import main

SCHEMA = json.loads((REPO / "docs" / "schemas" / "inspect.schema.json").read_text())
BUNDLED = sorted((REPO / "models").glob("*.onnx"))
CORPUS_CASES = sorted(p.parent for p in CORPUS.glob("*/case.json"))
TARGETS = {"onnxruntime", "tflite", "tflm", "onnxruntime-integer"}


def _inspect(*args: str) -> dict:
    result = CliRunner().invoke(main, ["inspect", *args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    jsonschema.validate(summary, SCHEMA, cls=jsonschema.Draft202012Validator)
    return summary


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def _expected_macs(proto: onnx.ModelProto) -> int | None:
    """Conv, ConvTranspose, Gemm and MatMul MACs at batch 1 from onnx's shape inference; None if a node's output
    has no shape or a symbolic one beyond the batch."""
    graph = shape_inference.infer_shapes(proto, data_prop=True).graph
    constants = {init.name: init.dims for init in graph.initializer}
    typed = [v for v in [*graph.input, *graph.value_info, *graph.output] if v.type.tensor_type.HasField("shape")]
    shapes = {v.name: _dims(v) for v in typed} | constants
    outputs = [name for node in graph.node if node.op_type != "Constant" for name in node.output if name]
    if any(name not in shapes or any(not isinstance(d, int) for d in shapes[name][1:]) for name in outputs):
        return None
    total = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        shape = {name: [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(shapes[name])] for name in [*node.input[:2], node.output[0]]}
        if any(not isinstance(d, int) for dims in shape.values() for d in dims):
            return None
        x, w, y = (shape[n] for n in (node.input[0], node.input[1], node.output[0]))
        if node.op_type == "Conv":
            total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            total += int(np.prod(x)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            total += int(np.prod(y)) * (x[0] if trans_a else x[1])
        else:
            total += int(np.prod(y)) * x[-1]
    return total


def _check_onnx_facts(path: Path, summary: dict) -> None:
    proto = onnx.load(path)
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    assert [(row["name"], row["shape"]) for row in summary["inputs"]] == [(v.name, _dims(v)) for v in inputs]
    assert [(row["name"], row["shape"]) for row in summary["outputs"]] == [(v.name, _dims(v)) for v in graph.output]
    assert summary["file_bytes"] == path.stat().st_size
    assert summary["nodes"] == len(graph.node) == sum(summary["ops"].values())
    assert summary["ops"] == dict(Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in graph.node))
    assert summary["opsets"] == {e.domain or "ai.onnx": e.version for e in proto.opset_import}
    arrays = [numpy_helper.to_array(init) for init in graph.initializer]
    arrays += [numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant" and n.attribute[0].name == "value"]
    assert summary["params"] == sum(a.size for a in arrays if a.dtype != np.int64)
    assert summary["macs"] == _expected_macs(proto)
    if summary["macs"] is not None:
        assert sum(summary["macs_by_op"].values()) == summary["macs"]
    assert set(summary["targets"]) == TARGETS
    for plan in summary["targets"].values():
        assert sum(plan["counts"].values()) == len(plan["nodes"])
        if plan["nodes"]:  # every node of the graph convert plans, once
            assert len(plan["nodes"]) == summary["preprocessed_nodes"]
        else:
            assert plan["refusal"]


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_models(path):
    summary = _inspect(str(path))
    _check_onnx_facts(path, summary)
    for name, plan in summary["targets"].items():  # the bundled CNN is quantized whole for every target
        assert plan["counts"] == {"quantized": summary["preprocessed_nodes"]}, name
    text = CliRunner().invoke(main, ["inspect", str(path)]).output
    assert all(row["name"] in text for row in summary["inputs"]) and all(f"  {t} " in text for t in TARGETS)


def _input_shapes(case: Path) -> list[str]:
    """--input-shape for the inputs the model declares dynamic, from the corpus' own data (as convert takes them)."""
    spec = json.loads((case / "case.json").read_text())
    shapes = []
    for row in spec["inputs"]:
        dims = row.get("model_shape", [])
        sample = row.get("npz_shape_per_sample")
        if any(not isinstance(d, int) for d in dims[1:]) and sample is not None:  # a sample of full rank is one call
            shape = sample if len(sample) == len(dims) else [1, *sample]
            shapes += ["--input-shape", f"{row['name']}=" + ",".join(map(str, shape))]
    return shapes


@pytest.mark.skipif(not CORPUS.exists(), reason=f"the third-party corpus is not on this machine ({CORPUS})")
@pytest.mark.parametrize("case", CORPUS_CASES, ids=lambda p: p.name)
def test_corpus_models(case):
    shapes = _input_shapes(case)
    summary = _inspect(str(case / "model.onnx"), *shapes)
    _check_onnx_facts(case / "model.onnx", summary)
    for name in ("tflite", "tflm", "onnxruntime-integer"):  # the shapes convert would take from the data suffice
        assert "dynamic dimensions" not in summary["targets"][name].get("refusal", "")


def test_dynamic_dimensions_are_named_not_guessed(tmp_path):
    proto = onnx.load(REPO / "models" / "digits_cnn.onnx")
    for i, name in ((2, "H"), (3, "W")):
        proto.graph.input[0].type.tensor_type.shape.dim[i].dim_param = name
    path = tmp_path / "dynamic.onnx"
    onnx.save(proto, path)
    summary = _inspect(str(path))
    assert summary["inputs"][0]["shape"] == ["N", 1, "H", "W"]
    assert summary["macs"] is None and summary["macs_note"].startswith("unknown")
    assert summary["targets"]["onnxruntime"]["counts"] == {"quantized": summary["preprocessed_nodes"]}
    for name in ("tflite", "tflm", "onnxruntime-integer"):
        assert "--input-shape" in summary["targets"][name]["refusal"]
    fixed = _inspect(str(path), "--input-shape", "input=1,1,8,8")
    assert fixed["targets"]["tflite"]["counts"] == {"quantized": fixed["preprocessed_nodes"]}


def test_exclude_shows_the_plans_convert_makes_with_it():
    summary = _inspect(str(REPO / "models" / "digits_cnn.onnx"), "--exclude", "Relu", "--exclude", "/classifier/.*")
    rows = {row["node"]: row for row in summary["targets"]["onnxruntime"]["nodes"]}
    excluded = sorted(name for name, row in rows.items() if row["outcome"] == "excluded")
    assert excluded == sorted(name for name, row in rows.items() if row["op"] == "Relu" or name == "/classifier/Gemm")
    assert len(excluded) == 4 and all(rows[name]["reason"].endswith("(--exclude)") for name in excluded)
    assert summary["targets"]["onnxruntime"]["counts"] == {"quantized": len(rows) - 4, "excluded": 4}
    # the int8 .tflite takes no float Gemm (convert refuses it with the same reason)
    gemm = next(row for row in summary["targets"]["tflite"]["nodes"] if row["node"] == "/classifier/Gemm")
    assert gemm["outcome"] == "refused" and "not a quantized constant" in gemm["reason"]
    text = CliRunner().invoke(main, ["inspect", str(REPO / "models" / "digits_cnn.onnx"), "--exclude", "Relu"]).output
    assert "excluded 3" in text and "excluded  Relu" in text
    empty = CliRunner().invoke(main, ["inspect", str(REPO / "models" / "digits_cnn.onnx"), "--exclude", ""])
    assert empty.exit_code == 2 and "exclude lists an empty name" in empty.output


@pytest.fixture(scope="module")
def converted_tflite(tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("inspect") / "out"
    result = CliRunner().invoke(
        main,
        ["convert", str(REPO / "models/digits_cnn.onnx"), "--target", "tflite", "--calib",
         str(REPO / "models/digits_calib.npz"), "-o", str(outdir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return outdir / "digits_cnn.tflite"


def test_converted_tflite(converted_tflite):
    from ai_edge_litert.interpreter import Interpreter

    summary = _inspect(str(converted_tflite))
    interpreter = Interpreter(model_path=str(converted_tflite))
    details = interpreter.get_input_details()
    assert [(row["name"], row["dtype"]) for row in summary["inputs"]] == [(d["name"], d["dtype"].__name__) for d in details]
    assert [[d if isinstance(d, int) else -1 for d in row["shape"]] for row in summary["inputs"]] == [
        list(d["shape_signature"]) for d in details
    ]
    assert [row["quantization"]["scale"] for row in summary["inputs"]] == pytest.approx([d["quantization"][0] for d in details])
    ops = interpreter._get_ops_details()
    assert summary["nodes"] == len(ops) == sum(summary["ops"].values())
    assert summary["ops"] == dict(Counter(op["op_name"] for op in ops))
    assert summary["claimed_by"] == ["tflite", "tflm"] and "targets" not in summary
    assert summary["macs"] == _expected_macs(onnx.load(REPO / "models" / "digits_cnn.onnx"))  # same layers
    assert summary["inputs"][0]["layout"] == "NHWC"


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("truncated.onnx", (REPO / "models/digits_cnn.onnx").read_bytes()[:300], "is not an ONNX model"),
        ("garbage.tflite", b"\x00" * 64, "TFLite"),
        ("model.txt", b"hello", "edgeq reads"),
        ("missing.onnx", None, "does not exist"),
    ],
)
def test_broken_files_are_one_line_and_exit_2(tmp_path, name, data, message):
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq: error:") and message in lines[0] and str(path) in lines[0]


def test_truncated_tflite_is_refused(tmp_path, converted_tflite):
    path = tmp_path / "truncated.tflite"
    path.write_bytes(converted_tflite.read_bytes()[:3000])
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and not result.stdout
