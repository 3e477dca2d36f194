"""The mixed-precision plots, PNG bytes (edgeq.io.figures, as the HTML report draws its own)."""

from __future__ import annotations

import math

from edgeq.io.figures import png_bytes, pyplot
from edgeq.mixed.sensitivity import SensitivityTable

MARKERS = {"float": "o", "int8": "s", "int4": "v"}


def sensitivity_png(table: SensitivityTable) -> bytes:
    """Per layer (graph order): the worst output SQNR with only that layer at each precision, and Omega."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 0.18 * len(table.layers) + 3), 4.2))
    x = list(range(len(table.layers)))
    for precision in table.precisions:
        values = [table.sqnr_db[layer.name][precision] for layer in table.layers]
        axis.plot(x, [v if math.isfinite(v) else None for v in values], MARKERS.get(precision, "x") + "-",
                  markersize=4, linewidth=0.8, label=f"only this layer {precision}")  # fmt: skip
    axis.axhline(table.base_sqnr_db, color="grey", linewidth=0.8, linestyle=":", label=f"base ({table.base_precision})")
    axis.set_xlabel("layer (graph order)")
    axis.set_ylabel("worst output SQNR (dB)")
    omega_precision = "int4" if "int4" in table.precisions else table.base_precision
    omega = [table.omega[layer.name][omega_precision] for layer in table.layers]
    if any(v > 0 for v in omega):
        right = axis.twinx()
        right.bar(x, omega, color="tab:red", alpha=0.25, label=f"Omega ({omega_precision})")
        right.set_yscale("log")
        right.set_ylabel(f"Omega at {omega_precision} (HAWQ-V2, log)")
        right.legend(loc="lower right", fontsize=8)
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title("Per-layer sensitivity")
    return png_bytes(figure)


def pareto_png(front: list[dict], measured: list[dict]) -> bytes:
    """Size against SQNR: the predicted front (line) and the measured builds (points, labelled)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    if front:
        axis.plot([p["size_bytes"] / 1024 for p in front], [p["predicted_sqnr_db"] for p in front], "-",
                  color="grey", linewidth=1, label="predicted front (milp)")  # fmt: skip
    for point in measured:
        axis.plot(point["size_bytes"] / 1024, point["sqnr_db"], "o", label=point["label"])
    axis.set_xlabel("artifact size (KiB)")
    axis.set_ylabel("worst output SQNR (dB)")
    axis.set_title("Size against accuracy")
    axis.legend(fontsize=8)
    return png_bytes(figure)
