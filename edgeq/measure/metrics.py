"""Error metrics between a reference (float) output and a test (quantized) output.

    SQNR = 10 log10( sum ref^2 / sum (ref - test)^2 )  in dB (inf when identical)
    top-1 agreement = mean over samples of [argmax ref == argmax test]

``ErrorSums`` accumulates the sums batch by batch, so metrics over a large data set need no stored outputs.
"""

from __future__ import annotations

import math

import numpy as np


class ErrorSums:
    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs = 0.0
        self.agree = 0
        self.samples = 0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        ref64 = np.asarray(ref, np.float64)
        diff = ref64 - np.asarray(test, np.float64)
        self.signal += float(np.sum(ref64 * ref64))
        self.noise += float(np.sum(diff * diff))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(diff), initial=0.0)))
        if is_class_scores(ref64):
            self.agree += int(np.sum(ref64.argmax(axis=1) == np.asarray(test).argmax(axis=1)))
            self.samples += ref64.shape[0]

    def sqnr_db(self) -> float:
        return _sqnr(self.signal, self.noise)

    def to_dict(self) -> dict:
        row = {"sqnr_db": round(self.sqnr_db(), 3), "max_abs_error": self.max_abs}
        if self.samples:
            row["top1_agreement"] = self.agree / self.samples
        return row


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def float_pairs(reference: list, test: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (reference, test) pairs of a model's outputs that these metrics measure: non-empty float tensors (a
    model's int, bool, empty and sequence outputs are left out)."""
    return [
        (r, t)
        for r, t in zip(reference, test, strict=True)
        if isinstance(r, np.ndarray) and np.issubdtype(r.dtype, np.floating) and r.size
    ]


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    ref = np.asarray(reference, np.float64)
    diff = ref - np.asarray(test, np.float64)
    return _sqnr(float(np.sum(ref * ref)), float(np.sum(diff * diff)))


def is_class_scores(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[1] > 1


def top1_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(test, axis=1)))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels).reshape(-1)))
