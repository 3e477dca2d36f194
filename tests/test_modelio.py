"""Model loading and saving: bad files give one clear EdgeqError, nothing is read outside the folder."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import make_convnet
from onnx import external_data_helper

from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import load_model, save_model, to_proto
from edgeq.io.session import session as ort_session


def test_round_trip_runs_in_onnxruntime(tmp_path, convnet_path):
    model = load_model(convnet_path)
    out = save_model(model, tmp_path / "copy.onnx", convnet_path)
    session = ort_session(out)
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    ref = ort_session(convnet_path).run(None, {"input": x})
    np.testing.assert_array_equal(session.run(None, {"input": x})[0], ref[0])
    assert onnx.load(out).ir_version <= 10


def test_missing_file(tmp_path):
    with pytest.raises(EdgeqError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(EdgeqError, match="not an ONNX model"):
        load_model(path)


def test_truncated(tmp_path, convnet_path):
    data = convnet_path.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeqError, match="not an ONNX model|not a valid ONNX model"):
        load_model(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(EdgeqError, match="empty"):
        load_model(path)


def _with_external_data(tmp_path, location: str) -> os.PathLike:
    model = make_convnet()
    folder = tmp_path / "model"
    folder.mkdir()
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0
    )
    onnx.save(model, folder / "m.onnx")  # writes folder/w.bin
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path = folder / "evil.onnx"
    onnx.save(proto, path)
    return path


def test_external_data_inside_folder_loads(tmp_path):
    path = _with_external_data(tmp_path, "w.bin")
    model = load_model(path)
    assert model.graph.initializers["stem.w"].const_value.numpy().shape == (8, 3, 3, 3)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    path = _with_external_data(tmp_path, location)
    with pytest.raises(EdgeqError, match="outside the model folder|not relative"):
        load_model(path)


def test_external_data_symlink_escaping_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    path = _with_external_data(tmp_path, "link.bin")
    os.symlink(tmp_path / "secret.bin", path.parent / "link.bin")
    with pytest.raises(EdgeqError, match="outside the model folder"):
        load_model(path)


def test_missing_external_data(tmp_path):
    path = _with_external_data(tmp_path, "gone.bin")
    with pytest.raises(EdgeqError, match="missing"):
        load_model(path)


@pytest.mark.parametrize("opset", [9, 22])
def test_unsupported_opset(tmp_path, opset):
    model = make_convnet()
    model.opset_import[0].version = opset
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(EdgeqError, match=f"opset {opset} is not supported"):
        load_model(path)


def test_opset_11_is_converted_to_13(tmp_path):
    path = tmp_path / "m11.onnx"
    onnx.save(make_convnet(opset=11), path)
    model = load_model(path)
    assert model.opset_imports[""] == 13


def test_save_refuses_input_path(convnet_path):
    model = load_model(convnet_path)
    before = convnet_path.read_bytes()
    with pytest.raises(EdgeqError, match="is the input file"):
        save_model(model, convnet_path, convnet_path)
    assert convnet_path.read_bytes() == before


def test_save_refuses_unwritable_folder(tmp_path, convnet_path):
    if os.geteuid() == 0:  # root may write anywhere but /proc
        with pytest.raises(EdgeqError, match="cannot write|not writable"):
            save_model(load_model(convnet_path), "/proc/edgeq-test.onnx")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(EdgeqError, match="not writable"):
        save_model(load_model(convnet_path), locked / "m.onnx")


def test_save_refuses_missing_folder(tmp_path, convnet_path):
    with pytest.raises(EdgeqError, match="does not exist"):
        save_model(load_model(convnet_path), tmp_path / "no" / "such" / "m.onnx")


def test_ir_version_is_readable_by_onnxruntime(convnet_path):
    proto = to_proto(load_model(convnet_path))
    ort_session(proto)
