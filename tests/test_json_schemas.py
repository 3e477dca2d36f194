"""docs/schemas/: every command with --json has a schema, each schema is valid Draft 2020-12, and what each command
prints on the bundled digits CNN and its converted artifacts validates against it."""

from __future__ import annotations

import json
from pathlib import Path

import click
import jsonschema
import pytest
from click.testing import CliRunner
from conftest import REPO

from edgeq.cli import main

SCHEMAS = REPO / "docs" / "schemas"
MODEL = str(REPO / "models" / "digits_cnn.onnx")
DATA = str(REPO / "models" / "digits_test.npz")


def _schema(command: str) -> dict:
    return json.loads((SCHEMAS / f"{command}.schema.json").read_text())


def _printed(*args: str) -> dict:
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)  # Python's reader: an exact tensor's SQNR is Infinity


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """The digits CNN converted once for every target, integer-only ONNX included."""
    outdir = tmp_path_factory.mktemp("schemas") / "out"
    result = CliRunner().invoke(
        main,
        ["convert", MODEL, "--target", "all", "--integer-only", "--calib", str(REPO / "models/digits_calib.npz"),
         "-o", str(outdir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return outdir


def test_every_json_command_has_a_valid_schema():
    with_json = {name for name, command in main.commands.items() if any(p.name == "as_json" for p in command.params)}
    assert with_json and {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")} == with_json
    for command in with_json:
        schema = _schema(command)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert isinstance(main.commands[command], click.Command)


def _objects(node):
    """Every schema object in NODE that declares properties."""
    if isinstance(node, dict):
        if "properties" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


@pytest.mark.parametrize("command", ["inspect", "verify", "compare", "profile"])
def test_every_object_states_additional_properties_and_required(command):
    for node in _objects(_schema(command)):
        assert "additionalProperties" in node and set(node["required"]) <= set(node["properties"]), node


def _valid(command: str, printed) -> None:
    jsonschema.validate(printed, _schema(command), cls=jsonschema.Draft202012Validator)


def test_inspect(artifacts):
    _valid("inspect", _printed("inspect", MODEL))
    _valid("inspect", _printed("inspect", str(artifacts / "digits_cnn.tflite")))


def test_verify(artifacts):
    both = _printed(
        "verify", str(artifacts / "digits_cnn.tflite"), str(artifacts / "digits_cnn.integer.onnx"), "--data", DATA,
        "--samples", "4",
    )  # fmt: skip
    _valid("verify", both)
    assert both["bit_exact"] and both["exact"]
    _valid("verify", _printed("verify", str(artifacts / "digits_cnn.qdq.onnx"), "--data", DATA, "--samples", "4"))


def test_compare(artifacts):
    one = _printed("compare", MODEL, str(artifacts / "digits_cnn.tflite"), "--data", DATA, "--max-samples", "8")
    _valid("compare", one)
    quantized = [str(artifacts / "digits_cnn.tflite"), str(artifacts / "digits_cnn.qdq.onnx")]
    several = _printed("compare", MODEL, *quantized, "--data", DATA, "--max-samples", "8")
    _valid("compare", several)
    assert set(several) == set(quantized)


@pytest.mark.parametrize("artifact", ["digits_cnn.tflite", "digits_cnn.qdq.onnx", "digits_cnn.integer.onnx"])
def test_profile(artifacts, artifact):
    _valid("profile", _printed("profile", str(artifacts / artifact), "--runs", "3", "--warmup", "1", "--no-progress"))


def test_profile_compare(artifacts):
    printed = _printed(
        "profile", str(artifacts / "digits_cnn.qdq.onnx"), "--compare", MODEL, "--runs", "2", "--warmup", "1",
        "--no-progress",
    )  # fmt: skip
    _valid("profile", printed)


def test_schemas_reject_what_commands_do_not_print(artifacts):
    printed = _printed("verify", str(artifacts / "digits_cnn.qdq.onnx"), "--data", DATA, "--samples", "2")
    for broken in ({**printed, "unexpected": 1}, {k: v for k, v in printed.items() if k != "bit_exact"}):
        with pytest.raises(jsonschema.ValidationError):
            _valid("verify", broken)
    summary = _printed("inspect", MODEL)
    summary["targets"]["tflite"]["nodes"][0]["outcome"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        _valid("inspect", summary)
