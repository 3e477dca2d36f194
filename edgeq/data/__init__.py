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

import os
from pathlib import Path

from edgeq.data.base import ArrayData, CalibrationData, InputSpec, input_specs
from edgeq.data.callables import CallableData, load_callable
from edgeq.data.images import ImageFolderData, ImageSpec, image_spec_from_table, parse_image_spec
from edgeq.data.npz import load_arrays, load_npz
from edgeq.errors import DataError

__all__ = [
    "ArrayData",
    "CalibrationData",
    "CallableData",
    "ImageSpec",
    "InputSpec",
    "image_spec_from_table",
    "input_specs",
    "load_arrays",
    "load_callable",
    "load_npz",
    "open_data",
    "parse_image_spec",
]


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
        raise DataError("'synthetic' data is for --calib only; give real data here")
    path = Path(text)
    if path.is_dir():
        return ImageFolderData(path, image_spec or ImageSpec(), specs, max_samples)
    if path.suffix == ".npz" or path.is_file():
        return load_npz(path, specs, max_samples)
    if ":" in text and not path.exists():
        return CallableData(text, specs, max_samples)
    raise DataError(
        f"data source {text!r} does not exist (give an .npz file, an image folder or module:function)"
    )
