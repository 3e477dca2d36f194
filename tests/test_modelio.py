"""Model loading and saving: bad files give one clear EdgeqError, nothing is read outside the folder."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import make_convnet
from onnx import TensorProto, external_data_helper, helper

import edgeq
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


@pytest.mark.parametrize("opset", [6, 26])
def test_unsupported_opset(tmp_path, opset):
    model = make_convnet()
    model.opset_import[0].version = opset
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(EdgeqError, match=f"opset {opset} is not supported"):
        load_model(path)


def _convnet_at(opset: int) -> onnx.ModelProto:
    """Conv-BatchNorm-Clip-MaxPool-Flatten-Gemm written as an exporter of OPSET writes it (Clip bounds as
    attributes before opset 11, initializers listed as graph inputs before IR version 4)."""
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(0, 0.3, (4, 3, 3, 3)),
        "b": rng.normal(0, 0.1, 4),
        "gamma": rng.uniform(0.5, 1.5, 4),
        "beta": rng.normal(0, 0.2, 4),
        "mean": rng.normal(0, 0.2, 4),
        "var": rng.uniform(0.5, 1.5, 4),
        "fc.w": rng.normal(0, 0.5, (64, 5)),
        "fc.b": rng.normal(0, 0.1, 5),
    }
    if opset < 11:
        clip = helper.make_node("Clip", ["bn"], ["act"], min=0.0, max=6.0)
    else:
        arrays.update(lo=np.array(0.0), hi=np.array(6.0))
        clip = helper.make_node("Clip", ["bn", "lo", "hi"], ["act"])
    inits = [onnx.numpy_helper.from_array(a.astype(np.float32), name) for name, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"]),
        clip,
        helper.make_node("MaxPool", ["act"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = onnx.helper.find_min_ir_version_for(model.opset_import)
    if model.ir_version < 4:
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset", [7, 10, 11, 17, 21, 22, 25])
def test_every_opset_from_7_to_25_quantizes_and_runs(tmp_path, opset):
    """Below 13 the model is converted up to 13 (per-channel QuantizeLinear); from 13 on it keeps its opset."""
    path = tmp_path / "m.onnx"
    onnx.save(_convnet_at(opset), path)
    assert load_model(path).opset_imports[""] == max(opset, 13)
    rng = np.random.default_rng(1)
    result = edgeq.quantize(path, rng.normal(size=(16, 3, 8, 8)).astype(np.float32))
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    expected = ort_session(onnx.load(path)).run(None, {"x": x})[0]
    got = ort_session(result.model).run(None, {"x": x})[0]
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


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
