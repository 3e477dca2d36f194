"""Calibration and evaluation data: where samples come from, checked against the model's inputs.

Sources (``open_data``):
* an ``.npz`` file: one array per model input, samples on the first axis (it replaces the batch dimension);
  other keys (labels) are allowed and ignored. Arrays are never loaded whole: a member stored uncompressed
  (``np.savez``) is read batch by batch at its offset inside the zip (``StoredArray``, random access), a
  compressed one (``np.savez_compressed``) is decompressed as a stream in sample order (``DeflatedArray``),
  so memory does not grow with the file. Only Fortran-ordered and 0-d members are loaded whole.
* a folder of images (.jpg/.jpeg/.png/.bmp, sorted by name, read lazily with Pillow) and an ``ImageSpec``:
  resize the shorter side, center-crop, ``(pixel * scale - mean) / std`` per channel, layout and dtype.
* ``module.path:function`` (imported with the working directory on ``sys.path``): a callable returning an
  iterable of samples or batches (a dict name -> array, or a bare array for a single-input model). It is
  called again for every pass over the data, and its items are checked as they stream; the sample count is
  known after the first pass.

Every problem is one EdgeqError line: missing file, not an .npz, missing keys, a per-sample shape that
differs from the model's fixed dimensions, a dtype other than the model's (never cast silently: float64
data for a float32 model is refused with the fix), no samples, unequal sample counts, NaN or Inf.
"""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgeq.errors import EdgeqError

_CHECK_BYTES = 4 * 2**20  # bytes per chunk when scanning an array for NaN/Inf
_READ_BYTES = 2**20  # bytes per read from a compressed member


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


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _check_array(name: str, array, spec: InputSpec, what: str) -> None:
    """ARRAY (samples on axis 0) must have SPEC's dtype and fixed per-sample dimensions."""
    if array.dtype != spec.dtype:
        raise EdgeqError(
            f"{what}: input {name!r} has dtype {array.dtype}, the model expects {spec.dtype} "
            f"(convert it with .astype(np.{spec.dtype.name}))"
        )
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
    """Scan the first COUNT samples (all by default) for NaN/Inf, a bounded chunk at a time."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    count = array.shape[0] if count is None else count
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    step = max(1, _CHECK_BYTES // max(1, row_bytes))
    for start in range(0, count, step):
        if not np.isfinite(array[start : min(start + step, count)]).all():
            raise EdgeqError(f"{what}: input {name!r} contains NaN or Inf values")


class CalibrationData(ABC):
    """Samples for a model's inputs, served in batches; iterable any number of times.

    ``num_samples`` is None only for a callable source that has not completed a pass yet.
    """

    specs: list[InputSpec]
    num_samples: int | None

    @abstractmethod
    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Dicts of input name -> array with at most BATCH_SIZE samples on the first axis."""


# ---- arrays and .npz files --------------------------------------------------------------------------------
class ArrayData(CalibrationData):
    """One array per input holding all samples: in memory, or an .npz member read batch by batch."""

    def __init__(self, arrays: Mapping, specs: list[InputSpec], what: str, max_samples: int | None = None):
        missing = [s.name for s in specs if s.name not in arrays]
        if missing:
            raise EdgeqError(
                f"{what}: missing key(s) {', '.join(map(repr, missing))} "
                f"(keys must be the model's input names: {', '.join(s.name for s in specs)})"
            )
        for spec in specs:
            _check_array(spec.name, arrays[spec.name], spec, what)
        counts = {s.name: arrays[s.name].shape[0] for s in specs}
        if len(set(counts.values())) > 1:
            raise EdgeqError(f"{what}: inputs have different sample counts {counts}")
        n = next(iter(counts.values()))
        if n == 0:
            raise EdgeqError(f"{what}: has zero samples")
        if max_samples is not None:
            n = min(n, max_samples)
        self.arrays = {s.name: arrays[s.name] for s in specs}
        try:
            for name, array in self.arrays.items():
                _check_finite(name, array, what, n)
        finally:
            self._close()
        self.specs = specs
        self.num_samples = n

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        try:
            for start in range(0, self.num_samples, batch_size):
                stop = min(start + batch_size, self.num_samples)
                yield {name: np.ascontiguousarray(a[start:stop]) for name, a in self.arrays.items()}
        finally:
            self._close()

    def _close(self) -> None:
        for array in self.arrays.values():
            if isinstance(array, DeflatedArray):
                array.close()


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


class DeflatedArray:
    """A C-ordered array in a compressed .npz member, decompressed as a stream in row order.

    Reading rows in increasing order (every pass of ``ArrayData.batches``) decompresses the member once per
    pass with memory for one slice; an earlier row restarts the stream.
    """

    def __init__(self, path: Path, info: zipfile.ZipInfo, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.info, self.dtype, self.shape = path, info, np.dtype(dtype), tuple(shape)
        self.ndim = len(self.shape)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._archive: zipfile.ZipFile | None = None
        self._stream = None
        self._next_row = 0

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("DeflatedArray reads contiguous row ranges only")
        count = max(0, stop - start)
        try:
            if self._stream is None or start < self._next_row:
                self._open()
            while self._next_row < start:  # skip rows in bounded reads
                skip = min(start - self._next_row, max(1, _CHECK_BYTES // max(1, self._row_bytes)))
                self._read(skip)
            return self._read(count)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            self.close()
            raise EdgeqError(f"{self.path}: array {self.info.filename!r} cannot be read ({exc})") from None

    def _open(self) -> None:
        self.close()
        self._archive = zipfile.ZipFile(self.path)
        self._stream = self._archive.open(self.info)
        _read_npy_header(self._stream)
        self._next_row = 0

    def _read(self, count: int) -> np.ndarray:
        # Piecewise into one buffer: zipfile's read(n) would build the result by concatenating bytes.
        out = np.empty(count * self._row_bytes, np.uint8)
        filled = 0
        while filled < out.size:
            piece = self._stream.read(min(out.size - filled, _READ_BYTES))
            if not piece:
                raise EdgeqError(f"{self.path}: array {self.info.filename!r} is truncated")
            out[filled : filled + len(piece)] = np.frombuffer(piece, np.uint8)
            filled += len(piece)
        self._next_row += count
        return out.view(self.dtype).reshape((count, *self.shape[1:]))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._archive.close()
        self._stream = self._archive = None


def _read_npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


def _stored_offset(raw, info: zipfile.ZipInfo) -> int:
    """Offset of an uncompressed member's data: after the zip local header and its name/extra fields."""
    raw.seek(info.header_offset)
    local = raw.read(30)  # name and extra-field lengths are at bytes 26..29 of the local file header
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def _npz_members(path: Path) -> dict[str, np.ndarray | StoredArray | DeflatedArray]:
    """The arrays of an .npz, as lazy readers wherever the layout allows."""
    arrays: dict[str, np.ndarray | StoredArray | DeflatedArray] = {}
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
                if info.compress_type == zipfile.ZIP_STORED:
                    raw.seek(_stored_offset(raw, info))
                    shape, fortran, dtype = _read_npy_header(raw)
                    data_offset = raw.tell()
                else:
                    with archive.open(info) as member:
                        shape, fortran, dtype = _read_npy_header(member)
                if dtype.hasobject or not shape or (fortran and len(shape) > 1):
                    # Objects are refused here (allow_pickle=False); scalars and Fortran order load whole.
                    with archive.open(info) as member:
                        arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
                elif info.compress_type == zipfile.ZIP_STORED:
                    arrays[key] = StoredArray(path, data_offset, dtype, shape)
                else:
                    arrays[key] = DeflatedArray(path, info, dtype, shape)
            except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise EdgeqError(f"{path}: array {key!r} cannot be read ({exc})") from None
    return arrays


def load_npz(path: str | os.PathLike, specs: list[InputSpec], max_samples: int | None = None) -> ArrayData:
    path = Path(path)
    if not path.is_file():
        raise EdgeqError(f"data file {path} does not exist")
    return ArrayData(_npz_members(path), specs, str(path), max_samples)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz (labels included), loaded whole, for evaluation code."""
    path = Path(path)
    if not path.is_file():
        raise EdgeqError(f"data file {path} does not exist")
    arrays = {}
    for key, array in _npz_members(path).items():
        arrays[key] = array if isinstance(array, np.ndarray) else array[:]
        if isinstance(array, DeflatedArray):
            array.close()
    return arrays


# ---- image folders ----------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class ImageSpec:
    """How an image file becomes a model input.

    The image is converted to COLOR ("RGB" or "L"), its shorter side resized to RESIZE (bilinear), then
    center-cropped to CROP (height, width); each pixel becomes ``(pixel * scale - mean[c]) / std[c]`` in
    LAYOUT ("NCHW" or "NHWC") and DTYPE. Fields left None (layout, color, dtype) follow the model's input:
    [N, 3|1, H, W] is NCHW, [N, H, W, 3|1] NHWC, 3 channels RGB, 1 channel L, and the input's dtype.

    As a string (``--image-spec``): comma-separated ``key=value``, lists separated by "/", a crop as
    ``224`` or ``HxW``, e.g. ``resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225``.
    As a TOML table: the same keys, with numbers and lists (``crop = [224, 224]``).
    """

    resize: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    layout: str | None = None
    color: str | None = None
    dtype: str | None = None

    def __post_init__(self):
        if self.resize is not None and self.resize < 1:
            raise EdgeqError("image spec: resize must be a positive number of pixels")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise EdgeqError("image spec: crop must be one or two positive sizes (height x width)")
        if not self.mean or not self.std or any(s == 0 for s in self.std):
            raise EdgeqError("image spec: mean and std need at least one value, and std no zero")
        if self.layout not in (None, "NCHW", "NHWC"):
            raise EdgeqError(f"image spec: layout must be NCHW or NHWC, not {self.layout!r}")
        if self.color not in (None, "RGB", "L"):
            raise EdgeqError(f"image spec: color must be RGB or L, not {self.color!r}")
        if self.dtype is not None:
            try:
                np.dtype(self.dtype)
            except TypeError:
                raise EdgeqError(f"image spec: unknown dtype {self.dtype!r}") from None


def image_spec_from_table(table: Mapping) -> ImageSpec:
    """An ImageSpec from a TOML table (or any mapping) with ImageSpec's field names."""
    known = {f.name for f in fields(ImageSpec)}
    unknown = [k for k in table if k not in known]
    if unknown:
        raise EdgeqError(f"image spec: unknown field(s) {', '.join(map(repr, unknown))}")
    values = dict(table)
    try:
        if isinstance(values.get("crop"), int):
            values["crop"] = (values["crop"], values["crop"])
        for key in ("crop", "mean", "std"):
            if values.get(key) is not None:
                cast = int if key == "crop" else float
                items = values[key] if isinstance(values[key], list | tuple) else [values[key]]
                values[key] = tuple(cast(v) for v in items)
        for key in ("layout", "color"):
            if values.get(key) is not None:
                values[key] = str(values[key]).upper()
        if values.get("resize") is not None:
            values["resize"] = int(values["resize"])
        if values.get("scale") is not None:
            values["scale"] = float(values["scale"])
    except (TypeError, ValueError):
        raise EdgeqError(f"image spec: bad value in {dict(table)}") from None
    return ImageSpec(**values)


def parse_image_spec(text: str) -> ImageSpec:
    """Parse 'resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,color=RGB'."""
    table: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise EdgeqError(f"image spec: {item!r} is not key=value")
        try:
            if key == "crop":
                h, _, w = value.lower().partition("x")
                table[key] = (int(h), int(w or h))
            elif key in ("mean", "std"):
                table[key] = tuple(float(v) for v in value.split("/"))
            else:
                table[key] = value
        except ValueError:
            raise EdgeqError(f"image spec: bad value in {item!r}") from None
    return image_spec_from_table(table)


class ImageFolderData(CalibrationData):
    """The images of a folder, sorted by name, decoded and preprocessed batch by batch."""

    def __init__(self, folder: Path, spec: ImageSpec, specs: list[InputSpec], max_samples: int | None = None):
        if len(specs) != 1:
            raise EdgeqError("an image folder can feed only single-input models")
        input_spec = specs[0]
        if len(input_spec.shape) != 4:
            raise EdgeqError(
                f"an image folder feeds rank-4 inputs ([N, C, H, W] or [N, H, W, C]); input "
                f"{input_spec.name!r} is {_shape_text(input_spec.shape)}"
            )
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_samples]
        if not self.files:
            raise EdgeqError(f"image folder {folder} holds no .jpg/.jpeg/.png/.bmp images")
        self.spec = _resolve_image_spec(spec, input_spec)
        self.specs, self.num_samples = specs, len(self.files)
        self._load(self.files[0])  # a wrong spec fails now, not in the middle of calibration

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        spec = self.spec
        try:
            with Image.open(path) as image:
                image = image.convert(spec.color)
                if spec.resize:
                    w, h = image.size
                    ratio = spec.resize / min(w, h)
                    size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
                    image = image.resize(size, Image.Resampling.BILINEAR)
                if spec.crop:
                    ch, cw = spec.crop
                    w, h = image.size
                    if cw > w or ch > h:
                        raise EdgeqError(
                            f"image {path} is {w}x{h} (width x height) after resizing, smaller than the crop "
                            f"{cw}x{ch}: raise resize"
                        )
                    left, top = (w - cw) // 2, (h - ch) // 2
                    image = image.crop((left, top, left + cw, top + ch))
                pixels = np.asarray(image, np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise EdgeqError(f"cannot read image {path}: {exc}") from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        channels = pixels.shape[2]
        for name in ("mean", "std"):
            if len(getattr(spec, name)) not in (1, channels):
                raise EdgeqError(
                    f"image spec: {name} has {len(getattr(spec, name))} values for {channels} channel(s)"
                )
        mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,))
        std = np.broadcast_to(np.asarray(spec.std, np.float32), (channels,))
        pixels = (pixels * np.float32(spec.scale) - mean) / std
        if spec.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        sample = np.ascontiguousarray(pixels.astype(spec.dtype))[None]
        _check_array(self.specs[0].name, sample, self.specs[0], f"image {path} (after the image spec)")
        return sample[0]

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.num_samples, batch_size):
            yield {
                self.specs[0].name: np.stack([self._load(p) for p in self.files[start : start + batch_size]])
            }


def _resolve_image_spec(spec: ImageSpec, input_spec: InputSpec) -> ImageSpec:
    """SPEC with layout, color and dtype taken from the model's input where the spec leaves them open."""
    shape = input_spec.shape
    layout = spec.layout
    if layout is None:
        layout = "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
    channels = shape[1] if layout == "NCHW" else shape[3]
    color = spec.color or {1: "L", 3: "RGB"}.get(channels)
    if color is None:
        raise EdgeqError(
            f"input {input_spec.name!r} is {_shape_text(shape)}: set color=RGB or color=L in the image spec"
        )
    dtype = np.dtype(spec.dtype or input_spec.dtype)
    identity = spec.scale == 1.0 and set(spec.mean) == {0.0} and set(spec.std) == {1.0}
    if np.issubdtype(dtype, np.integer) and not identity:
        raise EdgeqError(
            f"image spec: dtype {dtype} takes raw pixels: use scale=1 with mean 0 and std 1 (the defaults)"
        )
    return ImageSpec(spec.resize, spec.crop, spec.mean, spec.std, spec.scale, layout, color, dtype.name)


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
    """Samples or batches from a Python callable, re-invoked for every pass and checked as they stream."""

    def __init__(self, source: str, specs: list[InputSpec], max_samples: int | None = None):
        self.source, self.specs, self.max_samples = source, specs, max_samples
        self.function = load_callable(source)
        if not callable(self.function):
            raise EdgeqError(f"{source} is not callable")
        self.num_samples = None

    def _stream(self) -> Iterator[dict[str, np.ndarray]]:
        items = self.function()
        if isinstance(items, dict | np.ndarray):  # one batch holding every sample
            items = [items]
        if not isinstance(items, Iterable):
            raise EdgeqError(f"{self.source} must return an iterable of samples or batches")
        served = 0
        for item in items:
            if self.max_samples is not None and served >= self.max_samples:
                break
            batch = self._checked(item)
            if self.max_samples is not None:
                batch = {k: v[: self.max_samples - served] for k, v in batch.items()}
            served += next(iter(batch.values())).shape[0]
            yield batch
        if served == 0:
            raise EdgeqError(f"{self.source}: yielded zero samples")
        self.num_samples = served

    def _checked(self, item) -> dict[str, np.ndarray]:
        if not isinstance(item, dict):
            if len(self.specs) != 1:
                raise EdgeqError(f"{self.source}: a model with several inputs needs dicts of name -> array")
            item = {self.specs[0].name: item}
        missing = [s.name for s in self.specs if s.name not in item]
        if missing:
            raise EdgeqError(f"{self.source}: a yielded item lacks input(s) {', '.join(map(repr, missing))}")
        batch = {}
        for spec in self.specs:
            array = np.asarray(item[spec.name])
            if array.ndim == len(spec.shape) - 1:  # a single sample: give it the batch axis
                array = array[None]
            _check_array(spec.name, array, spec, self.source)
            _check_finite(spec.name, array, self.source)
            batch[spec.name] = array
        counts = {name: array.shape[0] for name, array in batch.items()}
        if len(set(counts.values())) > 1:
            raise EdgeqError(f"{self.source}: a yielded item has different sample counts {counts}")
        return batch

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Re-chunk the callable's items into batches of BATCH_SIZE (the last one may be smaller)."""
        pending: list[dict[str, np.ndarray]] = []
        held = 0
        for item in self._stream():
            while item:
                take = min(batch_size - held, next(iter(item.values())).shape[0])
                pending.append({k: v[:take] for k, v in item.items()})
                held += take
                rest = {k: v[take:] for k, v in item.items()}
                item = rest if next(iter(rest.values())).shape[0] else None
                if held == batch_size:
                    yield _joined(pending)
                    pending, held = [], 0
        if held:
            yield _joined(pending)


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return {k: np.ascontiguousarray(v) for k, v in parts[0].items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def open_data(
    source: str | os.PathLike,
    specs: list[InputSpec],
    *,
    image_spec: ImageSpec | None = None,
    max_samples: int | None = None,
) -> CalibrationData:
    """The data source named by SOURCE: an .npz file, an image folder, or module:function."""
    text = str(source)
    if text == "synthetic":  # only `--calib` knows how to distill data (edgeq/calibration/synthetic.py)
        raise EdgeqError("'synthetic' data is for --calib only; give real data here")
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
