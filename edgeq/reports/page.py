"""The data of the HTML report (edgeq.reports.html): compare, profile and analyse each artifact, and add the recipe,
stages and warnings of a quantize or convert report."""

from __future__ import annotations

import os
from pathlib import Path

from edgeq.data import CalibrationData
from edgeq.reports.compare import compare_artifacts
from edgeq.reports.html import write_report
from edgeq.reports.profile import profile


def report_page(float_model, artifacts: list[str], data: CalibrationData, *, runs: int, saved: dict | None) -> dict:
    """The page's sections (edgeq.reports.html.render) for ARTIFACTS of FLOAT_MODEL on DATA; SAVED is a quantize
    report or a convert report.json."""
    page: dict = {"title": f"edgeq report: {Path(float_model).name}"}
    page["compare"] = compare_artifacts(float_model, list(artifacts), data)
    page["profiles"] = [
        profile(path, runs=runs, warmup=5, threads=1, progress=False) for path in artifacts
    ]
    page["analysis"] = page["profiles"][0].get("analysis")
    page["artifacts"] = {path: Path(path).stat().st_size for path in artifacts}
    if saved is not None:
        targets = saved.get("targets") or {}
        quantize = next((t for t in targets.values() if isinstance(t, dict) and _is_quantize_report(t)), saved)
        page["recipe"] = saved.get("recipe")
        page["quantize"] = quantize if _is_quantize_report(quantize) else None
    return {k: v for k, v in page.items() if v is not None}


def _is_quantize_report(report: dict) -> bool:
    """A quantize report: its stages ("passes" in reports written before the pipeline recorded every stage)."""
    return "stages" in report or "passes" in report


def write_page(
    output: str | os.PathLike, float_model, artifacts: list[str], data: CalibrationData, *, runs: int, saved
) -> Path:
    return write_report(output, report_page(float_model, artifacts, data, runs=runs, saved=saved))
