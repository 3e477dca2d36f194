"""``.npz`` files: one array per model input, samples on the first axis, never loaded whole.

A member stored uncompressed (``np.savez``) is read batch by batch at its offset inside the zip (``StoredArray``,
random access); a compressed one (``np.savez_compressed``) is decompressed as a stream in sample order
(``DeflatedArray``), so memory does not grow with the file. Only Fortran-ordered and 0-d members are loaded
whole. Other keys (labels) are allowed and ignored.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from edgeq.data.base import CHECK_BYTES, ArrayData, InputSpec
from edgeq.errors import DataError

_READ_BYTES = 2**20  # bytes per read from a compressed member


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
            raise DataError(f"{self.path} is truncated")
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
                skip = min(start - self._next_row, max(1, CHECK_BYTES // max(1, self._row_bytes)))
                self._read(skip)
            return self._read(count)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            self.close()
            raise DataError(f"{self.path}: array {self.info.filename!r} cannot be read ({exc})") from None

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
                raise DataError(f"{self.path}: array {self.info.filename!r} is truncated")
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
        raise DataError(f"{path} is not an .npz file") from None
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
                raise DataError(f"{path}: array {key!r} cannot be read ({exc})") from None
    return arrays


def load_npz(path: str | os.PathLike, specs: list[InputSpec], max_samples: int | None = None) -> ArrayData:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    return ArrayData(_npz_members(path), specs, str(path), max_samples)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz (labels included), loaded whole, for evaluation code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    arrays = {}
    for key, array in _npz_members(path).items():
        arrays[key] = array if isinstance(array, np.ndarray) else array[:]
        if isinstance(array, DeflatedArray):
            array.close()
    return arrays


