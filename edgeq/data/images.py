"""A folder of images (.jpg/.jpeg/.png/.bmp, sorted by name, read lazily with Pillow) and an ``ImageSpec``: resize the
shorter side, center-crop, ``(pixel * scale - mean) / std`` per channel, layout and dtype (following the model's
input unless given).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from edgeq.data.base import CalibrationData, InputSpec, check_array, shape_text
from edgeq.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAX_SIDE = 16384  # pixels: a larger resize or crop is a typo that would allocate gigabytes per image


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
            raise DataError("image spec: resize must be a positive number of pixels")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise DataError("image spec: crop must be one or two positive sizes (height x width)")
        for name, sizes in (("resize", [self.resize or 0]), ("crop", self.crop or [0])):
            if max(sizes) > MAX_SIDE:
                raise DataError(f"image spec: {name} must be at most {MAX_SIDE} pixels, not {max(sizes)}")
        if not self.mean or not self.std or any(s == 0 for s in self.std):
            raise DataError("image spec: mean and std need at least one value, and std no zero")
        if not np.isfinite([*self.mean, *self.std, self.scale]).all():
            raise DataError("image spec: mean, std and scale must be finite numbers")
        if self.layout not in (None, "NCHW", "NHWC"):
            raise DataError(f"image spec: layout must be NCHW or NHWC, not {self.layout!r}")
        if self.color not in (None, "RGB", "L"):
            raise DataError(f"image spec: color must be RGB or L, not {self.color!r}")
        if self.dtype is not None:
            try:
                np.dtype(self.dtype)
            except TypeError:
                raise DataError(f"image spec: unknown dtype {self.dtype!r}") from None


def image_spec_from_table(table: Mapping) -> ImageSpec:
    """An ImageSpec from a TOML table (or any mapping) with ImageSpec's field names."""
    known = {f.name for f in fields(ImageSpec)}
    unknown = [k for k in table if k not in known]
    if unknown:
        raise DataError(f"image spec: unknown field(s) {', '.join(map(repr, unknown))}")
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
        raise DataError(f"image spec: bad value in {dict(table)}") from None
    return ImageSpec(**values)


def parse_image_spec(text: str) -> ImageSpec:
    """Parse 'resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,color=RGB'."""
    table: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise DataError(f"image spec: {item!r} is not key=value")
        try:
            if key == "crop":
                h, _, w = value.lower().partition("x")
                table[key] = (int(h), int(w or h))
            elif key in ("mean", "std"):
                table[key] = tuple(float(v) for v in value.split("/"))
            else:
                table[key] = value
        except ValueError:
            raise DataError(f"image spec: bad value in {item!r}") from None
    return image_spec_from_table(table)


class ImageFolderData(CalibrationData):
    """The images of a folder, sorted by name, decoded and preprocessed batch by batch."""

    def __init__(self, folder: Path, spec: ImageSpec, specs: list[InputSpec], max_samples: int | None = None):
        if len(specs) != 1:
            raise DataError("an image folder can feed only single-input models")
        input_spec = specs[0]
        if len(input_spec.shape) != 4:
            raise DataError(
                f"an image folder feeds rank-4 inputs ([N, C, H, W] or [N, H, W, C]); input "
                f"{input_spec.name!r} is {shape_text(input_spec.shape)}"
            )
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_samples]
        if not self.files:
            raise DataError(f"image folder {folder} holds no .jpg/.jpeg/.png/.bmp images")
        inside = folder.resolve()
        for path in self.files:  # a link out of the folder would read files the user did not give
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                raise DataError(f"image {path} is a link to {path.resolve()}, outside the folder {folder}")
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
                        raise DataError(
                            f"image {path} is {w}x{h} (width x height) after resizing, smaller than the crop "
                            f"{cw}x{ch}: raise resize"
                        )
                    left, top = (w - cw) // 2, (h - ch) // 2
                    image = image.crop((left, top, left + cw, top + ch))
                pixels = np.asarray(image, np.float32)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        channels = pixels.shape[2]
        for name in ("mean", "std"):
            if len(getattr(spec, name)) not in (1, channels):
                raise DataError(
                    f"image spec: {name} has {len(getattr(spec, name))} values for {channels} channel(s)"
                )
        mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,))
        std = np.broadcast_to(np.asarray(spec.std, np.float32), (channels,))
        pixels = (pixels * np.float32(spec.scale) - mean) / std
        if spec.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        sample = np.ascontiguousarray(pixels.astype(spec.dtype))[None]
        check_array(self.specs[0].name, sample, self.specs[0], f"image {path} (after the image spec)")
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
        raise DataError(
            f"input {input_spec.name!r} is {shape_text(shape)}: set color=RGB or color=L in the image spec"
        )
    dtype = np.dtype(spec.dtype or input_spec.dtype)
    identity = spec.scale == 1.0 and set(spec.mean) == {0.0} and set(spec.std) == {1.0}
    if np.issubdtype(dtype, np.integer) and not identity:
        raise DataError(
            f"image spec: dtype {dtype} takes raw pixels: use scale=1 with mean 0 and std 1 (the defaults)"
        )
    return ImageSpec(spec.resize, spec.crop, spec.mean, spec.std, spec.scale, layout, color, dtype.name)


