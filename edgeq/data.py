"""Calibration and evaluation data: where samples come from, checked against the model's inputs.

Sources (``open_data``):
* an ``.npz`` file: one array per model input, samples on the first axis (it replaces the batch dimension);
  other keys (labels) are allowed. Arrays of an uncompressed ``.npz`` (``np.savez``) are read batch by batch
  from their place inside the zip (``StoredArray``), so memory does not grow with the file; compressed members
  are loaded whole.
* a folder of images with an ``ImageSpec`` (resize, center crop, scale, mean/std, layout, dtype);
* ``module.path:function``: a callable returning an iterable of samples or batches (a dict name -> array, or a
  bare array for a single-input model). It is called again for every pass over the data.

Every source is checked before anything runs: keys, per-sample shape against the model's fixed dimensions,
exact dtype, at least one sample, equal sample counts, finite values. Each problem is one EdgeqError line.
"""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgeq.errors import EdgeqError

_CHECK_CHUNK = 64  # samples per chunk when scanning an array for NaN/Inf


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype


def input_specs(model: ir.Model) -> list[InputSpec]:
    """The graph inputs that are not initializers, with symbolic dimensions as str or None."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        shape = tuple(
            d if isinstance(d, int) else (str(d) if d is not None and str(d) else None)
            for d in (value.shape or ())
        )
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        specs.append(InputSpec(value.name, shape, np.dtype(dtype)))
    return specs


def _check_array(name: str, array: np.ndarray, spec: InputSpec, what: str) -> None:
    if array.dtype != spec.dtype:
        raise EdgeqError(f"{what}: input {name!r} has dtype {array.dtype}, the model expects {spec.dtype}")
    if array.ndim != len(spec.shape):
        raise EdgeqError(
            f"{what}: input {name!r} has shape {list(array.shape)}, the model expects rank {len(spec.shape)} "
            f"({_shape_text(spec.shape)}, samples on the first axis)"
        )
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True), start=1):
        if isinstance(want, int) and got != want:
            raise EdgeqError(
                f"{what}: input {name!r} has shape {list(array.shape)}, the model expects "
                f"{_shape_text(spec.shape)} (axis {axis} must be {want})"
            )


def _check_finite(name: str, array, what: str, count: int | None = None) -> None:
    """Scan the first COUNT samples (all by default) chunk by chunk for NaN/Inf."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    count = array.shape[0] if count is None else count
    for start in range(0, count, _CHECK_CHUNK):
        if not np.isfinite(array[start : min(start + _CHECK_CHUNK, count)]).all():
            raise EdgeqError(f"{what}: input {name!r} contains NaN or Inf values")


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class CalibrationData(ABC):
    """Samples for a model's inputs, served in batches; iterable any number of times."""

    specs: list[InputSpec]
    num_samples: int

    @abstractmethod
    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Dicts of input name -> array with at most BATCH_SIZE samples on the first axis."""


class ArrayData(CalibrationData):
    """One array per input holding all samples: in memory, or a StoredArray read batch by batch."""

    def __init__(
        self, arrays: dict[str, np.ndarray], specs: list[InputSpec], what: str, max_samples: int | None = None
    ):
        missing = [s.name for s in specs if s.name not in arrays]
        if missing:
            raise EdgeqError(
                f"{what}: missing key(s) {', '.join(map(repr, missing))} "
                f"(keys must be the model's input names)"
            )
        counts = {s.name: arrays[s.name].shape[0] if arrays[s.name].ndim else 0 for s in specs}
        for spec in specs:
            _check_array(spec.name, arrays[spec.name], spec, what)
        if len(set(counts.values())) > 1:
            raise EdgeqError(f"{what}: inputs have different sample counts {counts}")
        n = next(iter(counts.values()))
        if n == 0:
            raise EdgeqError(f"{what}: has zero samples")
        if max_samples is not None:
            n = min(n, max_samples)
        self.arrays = {s.name: arrays[s.name] for s in specs}
        for name, array in self.arrays.items():
            _check_finite(name, array, what, n)
        self.specs = specs
        self.num_samples = n

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.num_samples, batch_size):
            stop = min(start + batch_size, self.num_samples)
            yield {name: np.ascontiguousarray(a[start:stop]) for name, a in self.arrays.items()}


class StoredArray:
    """A C-ordered array stored uncompressed at OFFSET in a file, read slice by slice along axis 0.

    Reads go through ordinary file I/O, not a memory map: pages a memory map touches stay in the process's
    resident set, so calibrating on a large .npz would grow RSS with every batch.
    """

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.offset, self.dtype, self.shape = path, offset, np.dtype(dtype), tuple(shape)
        self.ndim = len(self.shape)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64))

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("StoredArray reads contiguous row ranges only")
        count = max(0, stop - start)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self._row * self.dtype.itemsize)
            data = np.fromfile(f, dtype=self.dtype, count=count * self._row)
        if data.size != count * self._row:
            raise EdgeqError(f"{self.path} is truncated")
        return data.reshape((count, *self.shape[1:]))


def _stored_member(raw, info: zipfile.ZipInfo) -> tuple[int, np.dtype, tuple[int, ...]] | None:
    """(offset, dtype, shape) of an uncompressed C-ordered .npy member of at least one dimension, else None."""
    raw.seek(info.header_offset)
    local = raw.read(30)  # the zip local file header: name and extra-field lengths at bytes 26..29
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    raw.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(raw)
    read_header = (
        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(raw)
    if dtype.hasobject or not shape or (fortran and len(shape) > 1):
        return None  # objects are then refused by read_array(allow_pickle=False)
    return raw.tell(), dtype, shape


def _npz_member_arrays(path: Path) -> dict[str, np.ndarray | StoredArray]:
    """Arrays of an .npz: read lazily where stored uncompressed, loaded whole otherwise."""
    arrays: dict[str, np.ndarray] = {}
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise EdgeqError(f"{path} is not an .npz file") from None
    with archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            try:
                stored = _stored_member(raw, info) if info.compress_type == zipfile.ZIP_STORED else None
                if stored is not None:
                    arrays[key] = StoredArray(path, *stored)
                else:  # compressed, scalar or Fortran-ordered: load it whole
                    with archive.open(info) as member:
                        arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise EdgeqError(f"{path}: array {key!r} cannot be read ({exc})") from None
    return arrays


def load_npz(path: str | os.PathLike, specs: list[InputSpec], max_samples: int | None = None) -> ArrayData:
    path = Path(path)
    if not path.is_file():
        raise EdgeqError(f"data file {path} does not exist")
    return ArrayData(_npz_member_arrays(path), specs, str(path), max_samples)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz (labels included), for evaluation code."""
    path = Path(path)
    if not path.is_file():
        raise EdgeqError(f"data file {path} does not exist")
    return {
        key: array[:] if isinstance(array, StoredArray) else array
        for key, array in _npz_member_arrays(path).items()
    }


# ---- image folders ----------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class ImageSpec:
    """How an image file becomes a model input: resize the shorter side, center-crop, then
    ``(pixel * scale - mean) / std`` per channel, in LAYOUT (NCHW or NHWC) and DTYPE."""

    resize: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0
    layout: str = "NCHW"
    dtype: str = "float32"
    color: str = "RGB"


def parse_image_spec(text: str) -> ImageSpec:
    """Parse 'resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,color=RGB'."""
    fields: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            if key == "resize":
                fields[key] = int(value)
            elif key == "crop":
                h, _, w = value.partition("x")
                fields[key] = (int(h), int(w or h))
            elif key in ("mean", "std"):
                fields[key] = tuple(float(v) for v in value.split("/"))
            elif key == "scale":
                fields[key] = float(value)
            elif key in ("layout", "dtype", "color"):
                fields[key] = value.upper() if key in ("layout", "color") else value
            else:
                raise KeyError(key)
        except KeyError:
            raise EdgeqError(f"image spec: unknown field {key!r}") from None
        except ValueError:
            raise EdgeqError(f"image spec: bad value in {item!r}") from None
    spec = ImageSpec(**fields)
    if spec.layout not in ("NCHW", "NHWC") or spec.color not in ("RGB", "L"):
        raise EdgeqError("image spec: layout must be NCHW or NHWC and color RGB or L")
    return spec


class ImageFolderData(CalibrationData):
    def __init__(self, folder: Path, spec: ImageSpec, specs: list[InputSpec], max_samples: int | None = None):
        if len(specs) != 1:
            raise EdgeqError("an image folder can feed only single-input models")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_samples]
        if not self.files:
            raise EdgeqError(f"image folder {folder} holds no .jpg/.png/.bmp images")
        self.spec, self.specs, self.num_samples = spec, specs, len(self.files)
        _check_array(specs[0].name, self._load(self.files[0])[None], specs[0], f"image folder {folder}")

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = image.convert(self.spec.color)
                if self.spec.resize:
                    w, h = image.size
                    ratio = self.spec.resize / min(w, h)
                    image = image.resize(
                        (max(1, round(w * ratio)), max(1, round(h * ratio))), Image.Resampling.BILINEAR
                    )
                if self.spec.crop:
                    ch, cw = self.spec.crop
                    w, h = image.size
                    left, top = (w - cw) // 2, (h - ch) // 2
                    image = image.crop((left, top, left + cw, top + ch))
                pixels = np.asarray(image, np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise EdgeqError(f"cannot read image {path}: {exc}") from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        channels = pixels.shape[2]
        mean = np.resize(np.asarray(self.spec.mean, np.float32), channels)
        std = np.resize(np.asarray(self.spec.std, np.float32), channels)
        pixels = (pixels * np.float32(self.spec.scale) - mean) / std
        if self.spec.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        return np.ascontiguousarray(pixels.astype(self.spec.dtype))

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.num_samples, batch_size):
            yield {
                self.specs[0].name: np.stack([self._load(p) for p in self.files[start : start + batch_size]])
            }


# ---- Python callables -------------------------------------------------------------------------------------
def load_callable(spec: str) -> Callable:
    """Import 'package.module:attribute' with the working directory on sys.path."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise EdgeqError(f"{spec!r} is not of the form module.path:function")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EdgeqError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise EdgeqError(f"module {module_name!r} has no attribute {attribute!r}") from None


class CallableData(CalibrationData):
    """Samples or batches from a Python callable, re-invoked for every pass; validated as they stream."""

    def __init__(self, source: str, specs: list[InputSpec], max_samples: int | None = None):
        self.source, self.specs, self.max_samples = source, specs, max_samples
        self.function = load_callable(source)
        self.num_samples = sum(next(iter(batch.values())).shape[0] for batch in self._stream())
        if self.num_samples == 0:
            raise EdgeqError(f"{source}: yielded zero samples")

    def _stream(self) -> Iterator[dict[str, np.ndarray]]:
        items = self.function()
        if not isinstance(items, Iterable):
            raise EdgeqError(f"{self.source} must return an iterable of samples or batches")
        served = 0
        for item in items:
            arrays = item if isinstance(item, dict) else {self.specs[0].name: item}
            missing = [s.name for s in self.specs if s.name not in arrays]
            if missing:
                raise EdgeqError(
                    f"{self.source}: a yielded item lacks input(s) {', '.join(map(repr, missing))}"
                )
            batch = {}
            for spec in self.specs:
                array = np.asarray(arrays[spec.name])
                if array.ndim == len(spec.shape) - 1:  # a single sample: give it the batch axis
                    array = array[None]
                _check_array(spec.name, array, spec, self.source)
                _check_finite(spec.name, array, self.source)
                batch[spec.name] = array
            if self.max_samples is not None:
                left = self.max_samples - served
                if left <= 0:
                    return
                batch = {k: v[:left] for k, v in batch.items()}
            served += next(iter(batch.values())).shape[0]
            yield batch

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        held = 0
        for batch in self._stream():
            pending.append(batch)
            held += next(iter(batch.values())).shape[0]
            while held >= batch_size:
                merged = {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}
                yield {k: v[:batch_size] for k, v in merged.items()}
                rest = {k: v[batch_size:] for k, v in merged.items()}
                held -= batch_size
                pending = [rest] if held else []
        if held:
            yield {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}


def open_data(
    source: str | os.PathLike,
    specs: list[InputSpec],
    *,
    image_spec: ImageSpec | None = None,
    max_samples: int | None = None,
) -> CalibrationData:
    """The data source named by SOURCE: an .npz file, an image folder, or module:function."""
    text = str(source)
    if text == "synthetic":
        raise EdgeqError("--calib synthetic (data-free calibration) is not available yet; give real data")
    path = Path(text)
    if path.is_dir():
        return ImageFolderData(path, image_spec or ImageSpec(), specs, max_samples)
    if path.suffix == ".npz" or path.is_file():
        return load_npz(path, specs, max_samples)
    if ":" in text and not path.exists():
        return CallableData(text, specs, max_samples)
    raise EdgeqError(
        f"data source {text!r} does not exist (give an .npz file, an image folder or module:function)"
    )
