"""Calibration data sources: every bad input is one clear EdgeqError; good input streams in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeq.data import (
    ArrayData,
    CallableData,
    ImageSpec,
    InputSpec,
    image_spec_from_table,
    input_specs,
    load_arrays,
    load_npz,
    open_data,
    parse_image_spec,
)
from edgeq.data.images import ImageFolderData
from edgeq.data.npz import DeflatedArray, StoredArray
from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import load_model

SPECS = [InputSpec("input", ("N", 3, 8, 8), np.dtype(np.float32))]


def _npz(tmp_path, compressed=False, **arrays):
    path = tmp_path / "data.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def _samples(n=10):
    return np.random.default_rng(0).normal(size=(n, 3, 8, 8)).astype(np.float32)


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_input_specs_of_a_model(convnet_path):
    assert input_specs(load_model(convnet_path)) == SPECS


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_members_stream_in_batches(tmp_path, compressed):
    x = _samples(10)
    data = load_npz(_npz(tmp_path, compressed, input=x, label=np.arange(10)), SPECS)
    assert data.num_samples == 10
    assert isinstance(data.arrays["input"], DeflatedArray if compressed else StoredArray)
    for _ in range(2):  # re-iterable: every pass reads the file again
        batches = list(data.batches(4))
        assert [b["input"].shape[0] for b in batches] == [4, 4, 2]
        np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), x)


def test_compressed_member_restarts_for_earlier_rows(tmp_path):
    x = _samples(10)
    data = load_npz(_npz(tmp_path, True, input=x), SPECS)
    member = data.arrays["input"]
    np.testing.assert_array_equal(member[6:9], x[6:9])  # skips rows 0..5
    np.testing.assert_array_equal(member[2:4], x[2:4])  # goes back: reopens the stream
    member.close()


def test_max_samples(tmp_path):
    assert load_npz(_npz(tmp_path, input=_samples(10)), SPECS, max_samples=3).num_samples == 3


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"other": _samples()}, "missing key.*'input'.*model's input names: input"),
        (
            {"input": _samples()[:, :2]},
            r"shape \[10, 2, 8, 8\], the model expects \[N, 3, 8, 8\] \(axis 1 must be 3\)",
        ),
        ({"input": _samples()[0]}, "expects rank 4"),
        ({"input": _samples().astype(np.float64)}, r"dtype float64, the model expects float32 .*astype"),
        ({"input": _samples().astype(np.int64)}, "dtype int64, the model expects float32"),
        ({"input": _samples(0)}, "zero samples"),
        ({"input": np.float32(1.0)}, "expects rank 4"),
    ],
)
def test_npz_errors(tmp_path, arrays, message, compressed):
    with pytest.raises(EdgeqError, match=message) as exc_info:
        load_npz(_npz(tmp_path, compressed, **arrays), SPECS)
    _one_line(exc_info)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_nan_inf(tmp_path, bad, compressed):
    x = _samples(100)
    x[77, 1, 2, 3] = bad
    with pytest.raises(EdgeqError, match="'input' contains NaN or Inf") as exc_info:
        load_npz(_npz(tmp_path, compressed, input=x), SPECS)
    _one_line(exc_info)
    # a sample past max_samples is never read
    assert load_npz(_npz(tmp_path, compressed, input=x), SPECS, max_samples=77).num_samples == 77


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


def test_missing_or_unknown_source(tmp_path):
    with pytest.raises(EdgeqError, match="data file .* does not exist"):
        open_data(tmp_path / "gone.npz", SPECS)
    with pytest.raises(EdgeqError, match="does not exist .*module:function"):
        open_data(tmp_path / "gone", SPECS)


def test_synthetic_is_for_calibration_only():
    with pytest.raises(EdgeqError, match="'synthetic' data is for --calib only"):
        open_data("synthetic", SPECS)


def test_npz_never_unpickles_and_reads_fortran_order(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, input=_samples(2), extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EdgeqError, match="cannot be read"):
        load_npz(path, SPECS)
    x = np.asfortranarray(_samples(6))
    data = load_npz(_npz(tmp_path, input=x), SPECS)
    np.testing.assert_array_equal(next(data.batches(6))["input"], x)


def test_truncated_npz(tmp_path):
    path = _npz(tmp_path, input=_samples(10))
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(EdgeqError, match="not an .npz"):  # the zip directory at the end is gone
        load_npz(path, SPECS)


def test_load_arrays_returns_everything(tmp_path):
    for compressed in (False, True):
        arrays = load_arrays(_npz(tmp_path, compressed, input=_samples(4), label=np.arange(4)))
        assert set(arrays) == {"input", "label"}
        np.testing.assert_array_equal(arrays["label"], np.arange(4))
        np.testing.assert_array_equal(arrays["input"], _samples(4))


def test_array_data_limits_samples():
    data = ArrayData({"input": _samples(7)}, SPECS, "arrays", max_samples=5)
    assert sum(b["input"].shape[0] for b in data.batches(2)) == 5


# ---- image folders ----------------------------------------------------------------------------------------
def _images(folder: Path, sizes, mode="RGB"):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(folder / f"{i:02d}.png")


def test_image_folder(tmp_path):
    _images(tmp_path, [(12, 16), (16, 12), (10, 10)])
    (tmp_path / "notes.txt").write_text("ignored")
    spec = parse_image_spec("resize=10,crop=8,mean=0.5/0.5/0.5,std=0.25/0.25/0.25,layout=NCHW")
    assert spec == ImageSpec(resize=10, crop=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, layout="NCHW")
    data = open_data(tmp_path, SPECS, image_spec=spec)
    assert isinstance(data, ImageFolderData) and data.num_samples == 3
    batch = next(data.batches(8))["input"]
    assert batch.shape == (3, 3, 8, 8) and batch.dtype == np.float32
    assert -2.0 - 1e-6 <= batch.min() and batch.max() <= 2.0 + 1e-6
    # the first image by hand: 12x16 -> 10x13 (shorter side 10) -> centre 8x8 crop
    image = Image.open(tmp_path / "00.png").convert("RGB").resize((13, 10), Image.Resampling.BILINEAR)
    pixels = np.asarray(image.crop((2, 1, 10, 9)), np.float32)
    np.testing.assert_allclose(batch[0], ((pixels / 255 - 0.5) / 0.25).transpose(2, 0, 1), atol=1e-5)


def test_image_folder_follows_the_model_layout_color_and_dtype(tmp_path):
    _images(tmp_path, [(8, 8), (8, 8)], mode="L")
    gray_nhwc = [InputSpec("x", (1, 8, 8, 1), np.dtype(np.float32))]
    batch = next(open_data(tmp_path, gray_nhwc, image_spec=ImageSpec()).batches(2))["x"]
    assert batch.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(
        batch[0, :, :, 0], np.asarray(Image.open(tmp_path / "00.png")) / 255, atol=1e-6
    )
    raw = [InputSpec("x", ("N", 8, 8, 3), np.dtype(np.uint8))]
    batch = next(open_data(tmp_path, raw, image_spec=parse_image_spec("scale=1")).batches(2))["x"]
    assert batch.dtype == np.uint8 and batch.shape == (2, 8, 8, 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(EdgeqError, match="no .jpg"):
        open_data(tmp_path, SPECS)
    _images(tmp_path, [(20, 20)])
    with pytest.raises(EdgeqError, match="axis 2 must be 8"):
        open_data(tmp_path, SPECS, image_spec=ImageSpec(resize=16))
    with pytest.raises(EdgeqError, match="smaller than the crop 8x8"):
        open_data(tmp_path, SPECS, image_spec=ImageSpec(resize=6, crop=(8, 8)))
    with pytest.raises(EdgeqError, match="mean has 2 values for 3 channel"):
        open_data(tmp_path, SPECS, image_spec=parse_image_spec("crop=8,mean=0.1/0.2"))
    raw = [InputSpec("x", ("N", 3, 8, 8), np.dtype(np.uint8))]
    with pytest.raises(EdgeqError, match="takes raw pixels"):
        open_data(tmp_path, raw, image_spec=parse_image_spec("crop=8"))
    with pytest.raises(EdgeqError, match="set color"):
        open_data(tmp_path, [InputSpec("x", ("N", 5, 8, 8), np.dtype(np.float32))])
    (tmp_path / "broken.png").write_text("not a png")
    data = open_data(tmp_path, SPECS, image_spec=ImageSpec(crop=(8, 8)))
    with pytest.raises(EdgeqError, match="cannot read image .*broken.png"):
        list(data.batches(4))


def test_image_folder_checks_every_image(tmp_path):
    _images(tmp_path, [(8, 8), (9, 8)])  # no resize/crop: the second image does not fit
    data = open_data(tmp_path, SPECS)
    with pytest.raises(EdgeqError, match="01.png.*axis 2 must be 8"):
        list(data.batches(2))


@pytest.mark.parametrize(
    "text, message",
    [
        ("zoom=2", "unknown field"),
        ("resize", "not key=value"),
        ("crop=big", "bad value"),
        ("layout=CHW", "layout must be NCHW or NHWC"),
        ("std=0", "std no zero"),
        ("dtype=float33", "unknown dtype"),
    ],
)
def test_image_spec_errors(text, message):
    with pytest.raises(EdgeqError, match=message):
        parse_image_spec(text)


def test_image_spec_from_a_toml_table():
    table = {"resize": 256, "crop": [224, 200], "mean": [0.485, 0.456, 0.406], "std": 0.5, "layout": "nhwc"}
    assert image_spec_from_table(table) == ImageSpec(
        resize=256, crop=(224, 200), mean=(0.485, 0.456, 0.406), std=(0.5,), layout="NHWC"
    )
    assert image_spec_from_table({"crop": 224}).crop == (224, 224)


# ---- callables --------------------------------------------------------------------------------------------
def stream_samples():  # used through "test_data:stream_samples"
    rng = np.random.default_rng(0)
    for _ in range(5):
        yield rng.normal(size=(3, 8, 8)).astype(np.float32)
    yield {"input": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)}


def all_at_once():
    return _samples(6)


def input_only():
    return {"input": _samples(6)}


def bad_stream():
    yield np.zeros((3, 8, 8), np.float64)


def nan_stream():
    yield np.full((2, 3, 8, 8), np.nan, np.float32)


def empty_stream():
    return iter(())


def not_iterable():
    return 3


@pytest.fixture
def in_tests_dir(monkeypatch):
    monkeypatch.chdir(Path(__file__).parent)


def test_callable_source(in_tests_dir):
    data = open_data("test_data:stream_samples", SPECS)
    assert isinstance(data, CallableData) and data.num_samples is None  # known after a pass
    assert [b["input"].shape[0] for b in data.batches(4)] == [4, 4, 1]
    assert data.num_samples == 9
    expected = np.concatenate(
        [np.reshape(s.get("input") if isinstance(s, dict) else s, (-1, 3, 8, 8)) for s in stream_samples()]
    )
    for size in (1, 2, 5, 100):  # re-iterable, any batch size, same samples in the same order
        np.testing.assert_array_equal(np.concatenate([b["input"] for b in data.batches(size)]), expected)
    limited = open_data("test_data:stream_samples", SPECS, max_samples=7)
    assert [b["input"].shape[0] for b in limited.batches(3)] == [3, 3, 1]
    whole = open_data("test_data:all_at_once", SPECS)
    np.testing.assert_array_equal(next(whole.batches(10))["input"], _samples(6))


@pytest.mark.parametrize(
    "source, message",
    [
        ("test_data:bad_stream", "dtype float64"),
        ("test_data:nan_stream", "NaN or Inf"),
        ("test_data:empty_stream", "zero samples"),
        ("test_data:not_iterable", "must return an iterable"),
        ("test_data:SPECS", "is not callable"),
        ("no_such_module_here:f", "cannot import"),
        ("test_data:nope", "no attribute"),
    ],
)
def test_callable_errors(in_tests_dir, source, message):
    with pytest.raises(EdgeqError, match=message):
        list(open_data(source, SPECS).batches(4))


def test_callable_with_several_inputs(in_tests_dir):
    specs = [*SPECS, InputSpec("mask", ("N", 4), np.dtype(np.float32))]
    with pytest.raises(EdgeqError, match="several inputs needs dicts"):
        list(open_data("test_data:stream_samples", specs).batches(4))
    with pytest.raises(EdgeqError, match="lacks input.*'mask'"):
        list(CallableData("test_data:input_only", specs).batches(4))
