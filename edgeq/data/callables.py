"""``module.path:function`` (imported with the working directory on ``sys.path``), or a Python callable or iterable
given to the API: samples or batches (a dict name -> array, or a bare array for a single-input model), fetched
again for every pass over the data and checked as they stream; the sample count is known after the first pass.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from edgeq.data.base import CalibrationData, InputSpec, as_array, check_array, check_batch_axis, check_finite
from edgeq.errors import DataError, EdgeqError, first_line

_END = object()  # the end of the user's iterable


def load_callable(spec: str) -> Callable:
    """Import 'package.module:attribute' with the working directory on sys.path: a callable that raises what the
    user's function raises as one DataError line naming SPEC."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise DataError(f"{spec!r} is not of the form module.path:function")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed (a SyntaxError, an error at import time)
        raise DataError(f"cannot import {module_name!r}: {type(exc).__name__}: {first_line(exc)}") from None
    try:
        function = getattr(module, attribute)
    except AttributeError:
        raise DataError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(function):
        raise DataError(f"{spec} is not callable")

    @functools.wraps(function)
    def calling(*args, **kwargs):
        with raising(spec):
            return function(*args, **kwargs)

    return calling


@contextmanager
def raising(source: str) -> Iterator[None]:
    """The user's code failing (a data function, its iterable, a model factory) as one DataError line."""
    try:
        yield
    except EdgeqError:
        raise
    except Exception as exc:
        raise DataError(f"{source} raised {type(exc).__name__}: {first_line(exc)}") from None


class CallableData(CalibrationData):
    """Samples or batches from a Python callable (or 'module:function'), re-invoked for every pass and checked as
    they stream. WHAT names the source in messages (default: the 'module:function' text, or the callable's name)."""

    def __init__(
        self,
        source: str | Callable[[], Iterable],
        specs: list[InputSpec],
        max_samples: int | None = None,
        *,
        what: str | None = None,
    ):
        self.specs, self.max_samples = specs, max_samples
        if isinstance(source, str):
            self.source, self.function = what or source, load_callable(source)
        else:
            self.source, self.function = what or getattr(source, "__name__", "the data callable"), source
        if not callable(self.function):
            raise DataError(f"{self.source} is not callable")
        check_batch_axis(specs, self.source)
        self.num_samples = None

    def _stream(self) -> Iterator[dict[str, np.ndarray]]:
        with raising(self.source):
            items = self.function()
        if isinstance(items, dict | np.ndarray):  # one batch holding every sample
            items = [items]
        if not isinstance(items, Iterable):
            raise DataError(f"{self.source} must return an iterable of samples or batches")
        with raising(self.source):
            items = iter(items)
        served = 0
        while self.max_samples is None or served < self.max_samples:
            with raising(self.source):
                item = next(items, _END)
            if item is _END:
                break
            batch = self._checked(item)
            if self.max_samples is not None:
                batch = {k: v[: self.max_samples - served] for k, v in batch.items()}
            served += next(iter(batch.values())).shape[0]
            yield batch
        if served == 0:
            raise DataError(f"{self.source}: yielded zero samples")
        self.num_samples = served

    def _checked(self, item) -> dict[str, np.ndarray]:
        if not isinstance(item, dict):
            if len(self.specs) != 1:
                raise DataError(f"{self.source}: a model with several inputs needs dicts of name -> array")
            item = {self.specs[0].name: item}
        missing = [s.name for s in self.specs if s.name not in item]
        if missing:
            raise DataError(f"{self.source}: a yielded item lacks input(s) {', '.join(map(repr, missing))}")
        batch = {}
        for spec in self.specs:
            array = as_array(item[spec.name], spec.name, self.source)
            if array.ndim == len(spec.shape) - 1:  # a single sample: give it the batch axis
                array = array[None]
            check_array(spec.name, array, spec, self.source)
            check_finite(spec.name, array, self.source)
            batch[spec.name] = array
        counts = {name: array.shape[0] for name, array in batch.items()}
        if len(set(counts.values())) > 1:
            raise DataError(f"{self.source}: a yielded item has different sample counts {counts}")
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


