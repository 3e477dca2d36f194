"""What data must be: samples checked against a model's inputs, served in batches (``CalibrationData``).

Every problem is one DataError line naming the source: model inputs without a shared batch axis to stack
samples on (a scalar input, inputs whose first dimensions are fixed to different sizes), a missing input, a
per-sample shape that differs from the model's fixed dimensions, a dtype other than the model's (never cast
silently: float64 data for a float32 model is refused with the fix), no samples, unequal sample counts, NaN or
Inf. ``ArrayData`` holds one array per input (in memory, or an .npz member read batch by batch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgeq.errors import DataError

CHECK_BYTES = 4 * 2**20  # bytes per chunk when scanning an array for NaN/Inf


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


def shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_array(name: str, array, spec: InputSpec, what: str) -> None:
    """ARRAY (samples on axis 0) must have SPEC's dtype and fixed per-sample dimensions."""
    if array.dtype != spec.dtype:
        raise DataError(
            f"{what}: input {name!r} has dtype {array.dtype}, the model expects {spec.dtype} "
            f"(convert it with .astype(np.{spec.dtype.name}))"
        )
    if array.ndim != len(spec.shape):
        raise DataError(
            f"{what}: input {name!r} has shape {list(array.shape)}, the model expects rank {len(spec.shape)} "
            f"({shape_text(spec.shape)}, samples on the first axis)"
        )
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True), start=1):
        if isinstance(want, int) and got != want:
            raise DataError(
                f"{what}: input {name!r} has shape {list(array.shape)}, the model expects "
                f"{shape_text(spec.shape)} (axis {axis} must be {want})"
            )


def check_batch_axis(specs: list[InputSpec], what: str) -> None:
    """Samples stack on the first axis of every input, so the model's inputs need one shared batch axis: not a
    scalar input (no axis at all), nor inputs whose first dimensions are fixed to different sizes (a Conv's
    weights, a broadcast operand given as a graph input)."""
    for spec in specs:
        if not spec.shape:
            raise DataError(
                f"{what}: the model's input {spec.name!r} has no axes (a scalar, or no declared shape), so no batch "
                "axis to stack samples on: edgeq cannot calibrate it (give the input a batch dimension)"
            )
    fixed = {s.name: s.shape[0] for s in specs if isinstance(s.shape[0], int)}
    if len(set(fixed.values())) > 1:
        raise DataError(
            f"{what}: the model's inputs have no shared batch axis (first dimensions {fixed}): edgeq stacks samples "
            "on the first axis of every input, so it cannot calibrate this model"
        )


def check_finite(name: str, array, what: str, count: int | None = None) -> None:
    """Scan the first COUNT samples (all by default) for NaN/Inf, a bounded chunk at a time."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    count = array.shape[0] if count is None else count
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    step = max(1, CHECK_BYTES // max(1, row_bytes))
    for start in range(0, count, step):
        if not np.isfinite(array[start : min(start + step, count)]).all():
            raise DataError(f"{what}: input {name!r} contains NaN or Inf values")


class CalibrationData(ABC):
    """Samples for a model's inputs, served in batches; iterable any number of times.

    ``num_samples`` is None only for a callable source that has not completed a pass yet.
    """

    specs: list[InputSpec]
    num_samples: int | None

    @abstractmethod
    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Dicts of input name -> array with at most BATCH_SIZE samples on the first axis."""

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's shape per sample (without the sample axis), as the first sample has it."""
        first = next(iter(self.batches(1)))
        return {name: tuple(array.shape[1:]) for name, array in first.items()}

    def head(self, count: int) -> ArrayData:
        """The first COUNT samples (or all, if fewer), in memory."""
        first = next(iter(self.batches(count)))
        return ArrayData(first, self.specs, "the first samples")


def as_array(array, name: str, what: str):
    """ARRAY as numpy: lists and tensors are converted; numpy arrays and the .npz readers' lazy arrays (anything with
    a numpy dtype) are kept as they are."""
    if isinstance(getattr(array, "dtype", None), np.dtype):
        return array
    try:
        return np.asarray(array)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{what}: input {name!r} is not an array ({type(array).__name__}: {exc})") from None


class ArrayData(CalibrationData):
    """One array per input holding all samples: in memory, or an .npz member read batch by batch."""

    def __init__(self, arrays: Mapping, specs: list[InputSpec], what: str, max_samples: int | None = None):
        check_batch_axis(specs, what)
        arrays = {name: as_array(array, name, what) for name, array in arrays.items()}
        missing = [s.name for s in specs if s.name not in arrays]
        if missing:
            raise DataError(
                f"{what}: missing key(s) {', '.join(map(repr, missing))} "
                f"(keys must be the model's input names: {', '.join(s.name for s in specs)})"
            )
        for spec in specs:
            check_array(spec.name, arrays[spec.name], spec, what)
        counts = {s.name: arrays[s.name].shape[0] for s in specs}
        if len(set(counts.values())) > 1:
            raise DataError(f"{what}: inputs have different sample counts {counts}")
        n = next(iter(counts.values()))
        if n == 0:
            raise DataError(f"{what}: has zero samples")
        if max_samples is not None:
            n = min(n, max_samples)
        self.arrays = {s.name: arrays[s.name] for s in specs}
        try:
            for name, array in self.arrays.items():
                check_finite(name, array, what, n)
        finally:
            self._close()
        self.specs = specs
        self.num_samples = n

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(array.shape[1:]) for name, array in self.arrays.items()}

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        try:
            for start in range(0, self.num_samples, batch_size):
                stop = min(start + batch_size, self.num_samples)
                yield {name: np.ascontiguousarray(a[start:stop]) for name, a in self.arrays.items()}
        finally:
            self._close()

    def _close(self) -> None:
        for array in self.arrays.values():
            if hasattr(array, "close"):
                array.close()


