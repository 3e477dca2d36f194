"""Calibration data sources: every bad input is one clear EdgeqError; good input streams in batches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeq.data import (
    ArrayData,
    CallableData,
    ImageSpec,
    InputSpec,
    StoredArray,
    input_specs,
    load_npz,
    open_data,
    parse_image_spec,
)
from edgeq.errors import EdgeqError
from edgeq.modelio import load_model

SPECS = [InputSpec("input", ("N", 3, 8, 8), np.dtype(np.float32))]


def _npz(tmp_path, compressed=False, **arrays):
    path = tmp_path / "data.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def _samples(n=10):
    return np.random.default_rng(0).normal(size=(n, 3, 8, 8)).astype(np.float32)


def test_input_specs_of_a_model(convnet_path):
    assert input_specs(load_model(convnet_path)) == SPECS


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_batches_cover_all_samples(tmp_path, compressed):
    x = _samples(10)
    data = load_npz(_npz(tmp_path, compressed, input=x, label=np.arange(10)), SPECS)
    assert data.num_samples == 10
    assert isinstance(data.arrays["input"], StoredArray) != compressed  # uncompressed: read batch by batch
    batches = list(data.batches(4))
    assert [b["input"].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), x)


def test_max_samples(tmp_path):
    assert load_npz(_npz(tmp_path, input=_samples(10)), SPECS, max_samples=3).num_samples == 3


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"other": _samples()}, "missing key.*'input'"),
        ({"input": _samples()[:, :2]}, r"axis 1 must be 3"),
        ({"input": _samples()[0]}, "expects rank 4"),
        ({"input": _samples().astype(np.float64)}, "dtype float64, the model expects float32"),
        ({"input": _samples(0)}, "zero samples"),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    with pytest.raises(EdgeqError, match=message):
        load_npz(_npz(tmp_path, **arrays), SPECS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_nan_inf(tmp_path, bad):
    x = _samples(100)
    x[77, 1, 2, 3] = bad
    with pytest.raises(EdgeqError, match="NaN or Inf"):
        load_npz(_npz(tmp_path, input=x), SPECS)


def test_sample_counts_must_agree(tmp_path):
    specs = [*SPECS, InputSpec("mask", ("N", 4), np.dtype(np.float32))]
    path = _npz(tmp_path, input=_samples(5), mask=np.zeros((4, 4), np.float32))
    with pytest.raises(EdgeqError, match="different sample counts"):
        load_npz(path, specs)


def test_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("hello")
    with pytest.raises(EdgeqError, match="not an .npz"):
        open_data(path, SPECS)


def test_missing_source(tmp_path):
    with pytest.raises(EdgeqError, match="does not exist"):
        open_data(tmp_path / "gone.npz", SPECS)


def test_synthetic_is_reserved():
    with pytest.raises(EdgeqError, match="synthetic"):
        open_data("synthetic", SPECS)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    spec = parse_image_spec("resize=10,crop=8,mean=0.5/0.5/0.5,std=0.25/0.25/0.25,layout=NCHW")
    assert spec == ImageSpec(resize=10, crop=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    data = open_data(tmp_path, SPECS, image_spec=spec)
    assert data.num_samples == 3
    batch = next(data.batches(8))["input"]
    assert batch.shape == (3, 3, 8, 8) and batch.dtype == np.float32
    assert -2.0 - 1e-6 <= batch.min() and batch.max() <= 2.0 + 1e-6


def test_image_folder_errors(tmp_path):
    with pytest.raises(EdgeqError, match="no .jpg"):
        open_data(tmp_path, SPECS)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(EdgeqError, match="axis 2 must be 8"):
        open_data(tmp_path, SPECS, image_spec=ImageSpec(resize=16))
    with pytest.raises(EdgeqError, match="unknown field"):
        parse_image_spec("zoom=2")


def stream_samples():  # used through "test_data:stream_samples"
    rng = np.random.default_rng(0)
    for _ in range(5):
        yield rng.normal(size=(3, 8, 8)).astype(np.float32)
    yield {"input": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)}


def bad_stream():
    yield np.zeros((3, 8, 8), np.float64)


def test_callable_source(monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).parent)
    data = open_data("test_data:stream_samples", SPECS)
    assert isinstance(data, CallableData) and data.num_samples == 9
    assert [b["input"].shape[0] for b in data.batches(4)] == [4, 4, 1]
    assert sum(b["input"].shape[0] for b in data.batches(4)) == 9  # re-iterable
    with pytest.raises(EdgeqError, match="dtype float64"):
        open_data("test_data:bad_stream", SPECS)
    with pytest.raises(EdgeqError, match="cannot import"):
        open_data("no_such_module_here:f", SPECS)
    with pytest.raises(EdgeqError, match="no attribute"):
        open_data("test_data:nope", SPECS)


def test_array_data_limits_samples():
    data = ArrayData({"input": _samples(7)}, SPECS, "arrays", max_samples=5)
    assert sum(b["input"].shape[0] for b in data.batches(2)) == 5


def test_npz_never_unpickles_and_reads_fortran_order(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, input=_samples(2), extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EdgeqError, match="cannot be read"):
        load_npz(path, SPECS)
    x = np.asfortranarray(_samples(6))
    data = load_npz(_npz(tmp_path, input=x), SPECS)
    np.testing.assert_array_equal(next(data.batches(6))["input"], x)
