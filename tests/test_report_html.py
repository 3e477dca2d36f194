"""The HTML report built from real runs on the digits CNN, opened in headless Chromium.

Chromium (Debian package ``chromium``) is run as

    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir=TMP
             --enable-logging=stderr --v=0 --window-size=1280,5000 --screenshot=OUT.png file:///REPORT.html

With ``--enable-logging=stderr`` every console message (console.log/error, uncaught exceptions, Content Security
Policy refusals) is printed as ``...:INFO:CONSOLE:LINE] "message", source: URL (LINE)``; the report has no
scripts, so any such line is a defect. A control page proves that those lines are seen.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from edgeq.data import input_specs, load_npz
from edgeq.io.onnx_model import load_model, save_model
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reports.compare import compare
from edgeq.reports.html import render, write_report
from edgeq.reports.profile import analyze, profile
from edgeq.targets.tflite.artifact import build

MODELS = REPO / "models"
# Debian's package is "chromium"; Ubuntu's is "chromium-browser", and CI images often ship Google Chrome
CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed (apt-get install chromium)"
)
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")
PNG_SRC = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    """Quantize the digits CNN with two recipes, compare both with float, profile in ORT and LiteRT, analyse
    the .tflite (edgeq.reports.profile.analyze)."""
    folder = tmp_path_factory.mktemp("report")
    float_path = MODELS / "digits_cnn.onnx"
    model = load_model(float_path)
    specs = input_specs(model)
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, load_npz(MODELS / "digits_calib.npz", specs))
    test_data = load_npz(MODELS / "digits_test.npz", specs)
    # the second recipe leaves the classifier float and runs a pass, so the report has float nodes and passes
    excluding = Recipe(per_channel=False, calib_method="minmax", exclude=["/classifier/.*"], passes=["bias-correction"])
    recipes = {"per-channel": Recipe(), "per-tensor <minmax>": excluding}
    results, paths, reports = {}, {}, {}
    for label, recipe in recipes.items():
        qdq, reports[label] = Pipeline(recipe).quantize(calibration)
        paths[label] = save_model(qdq, folder / f"digits_{len(paths)}.qdq.onnx")
        results[label] = compare(float_path, paths[label], test_data)
    tflite_path = folder / "digits_cnn.tflite"
    tflite_path.write_bytes(build(load_model(paths["per-channel"])).data)
    return {
        "title": "digits CNN <int8> & friends",
        "compare": results,
        "profiles": [
            profile(paths["per-channel"], runs=20, warmup=3, progress=False),
            profile(tflite_path, runs=20, warmup=3, progress=False),
        ],
        "analysis": analyze(tflite_path),
        "artifacts": {str(p): p.stat().st_size for p in [float_path, *paths.values(), tflite_path]},
        "recipe": excluding.to_dict(),
        "quantize": reports["per-tensor <minmax>"],
    }


def _pngs(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(src))) for src in PNG_SRC.findall(page)]


@pytest.mark.slow
def test_every_section_and_one_image_per_plot(digits_data):
    page = render(digits_data)
    for heading in ["Accuracy", "Latency", "Compute and activation memory", "Artifacts", "Quantization", "Warnings"]:
        assert f"<h2>{heading}" in page
    # plots: per-layer SQNR, ORT time per op type (the LiteRT profile has no per-op breakdown), MACs/bytes
    images = _pngs(page)
    assert page.count("<img") == len(images) == 3
    assert page.count("<svg") == 0
    for image in images:
        pixels = np.asarray(image.convert("L"), np.float32)
        assert image.width >= 600 and pixels.std() > 5
    # self-contained: nothing but the data: URIs is referenced
    assert re.findall(r'(?:src|href)="(?!data:image/png;base64,)', page) == []
    assert "url(" not in page
    # the numbers of the runs are there, and both models' SQNR rows
    logits = digits_data["compare"]["per-channel"]["outputs"]["logits"]["sqnr_db"]
    assert f"{logits:.4g}" in page
    assert "per-tensor &lt;minmax&gt;" in page and "<minmax>" not in page
    assert "digits CNN &lt;int8&gt; &amp; friends" in page
    # the slowest nodes table lists the profile's first nodes with their op types (which op types make the top
    # of the time ranking depends on machine load, so the test reads them from the profile it renders)
    slowest = digits_data["profiles"][0]["per_op"]["by_node"][:3]
    assert all(f"<td>{row['node']}</td><td>{row['op_type']}</td>" in page for row in slowest)
    assert "LiteRT, reference kernels" in page and "TFLite Micro: arena" in page
    # the excluded classifier is listed as left float, and the pass that ran is shown with what it did
    warnings = page[page.index("<h2>Warnings") :]
    assert "<td>/classifier/Gemm</td><td>excluded</td>" in warnings
    assert "<th>bias-correction</th><td><pre>{" in page and "corrected_layers" in page


@pytest.mark.slow
def test_sections_are_optional(digits_data):
    only_artifacts = render({"artifacts": digits_data["artifacts"]})
    assert "<h2>Artifacts" in only_artifacts and "<h2>" in only_artifacts
    assert "<h2>Accuracy" not in only_artifacts and "<img" not in only_artifacts
    assert "<h2>" not in render({})
    layers_only = render({"analysis": {"layers": digits_data["analysis"]["layers"]}})
    assert layers_only.count("<img") == 1 and "peak activation" not in layers_only


def test_user_text_is_escaped():
    """Node names, warnings and recipe values from a hostile model cannot inject markup."""
    hostile = '<script>alert("x")</script>'
    report = {
        "activation_type": "int8",
        "calibration": {"samples": 1, "method": hostile, "seconds": 0.1},
        "quantized_tensors": 1,
        "fused_activations": 0,
        "quantized_nodes": {hostile: 1},
        "stages": {hostile: {hostile: hostile}},
        "warnings": [f"node {hostile}: bias kept float"],
        "float_nodes": {hostile: 'Custom" onerror="x is not quantized'},
    }
    compare = {
        hostile: {
            "outputs": {hostile: {"sqnr_db": 12.0, "max_abs_error": 0.5}},
            "layers": {hostile: {"sqnr_db": float("inf"), "max_abs_error": 0.0}},
        }
    }
    page = render({"title": hostile, "compare": compare, "quantize": report, "recipe": {"exclude": [hostile]}})
    assert "<script" not in page
    assert '" onerror="' not in page
    assert page.count("&lt;script&gt;") >= 10
    assert '<td class="num">exact</td>' in page  # infinite SQNR: the layer is reproduced exactly


@pytest.mark.slow
def test_write_report_is_atomic(digits_data, tmp_path):
    path = write_report(tmp_path / "report.html", {"artifacts": digits_data["artifacts"]})
    assert path.read_text(encoding="utf-8") == render({"artifacts": digits_data["artifacts"]})
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind


def _chromium_screenshot(page_path, screenshot_path, tmp_path) -> str:
    """Render PAGE_PATH headless into SCREENSHOT_PATH; returns the console messages Chromium logged."""
    completed = subprocess.run(
        [
            CHROMIUM or "chromium",
            "--headless",
            "--no-sandbox",  # root in containers and CI
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,5000",
            f"--screenshot={screenshot_path}",
            page_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return "\n".join(line for line in completed.stderr.splitlines() if CONSOLE_LINE.search(line))


@pytest.mark.slow
@needs_chromium
def test_chromium_renders_the_report_without_console_errors(digits_data, tmp_path):
    page_path = write_report(tmp_path / "report.html", digits_data)
    screenshot = tmp_path / "report.png"
    console = _chromium_screenshot(page_path, screenshot, tmp_path)
    assert console == ""
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), np.int32)
    assert pixels.shape == (5000, 1280, 3)
    assert pixels.std() > 10  # text, tables and plots, not a blank page
    # the plots are drawn: only they have saturated colours (text and tables are grey; see the control below)
    assert _coloured_fraction(pixels) > 0.01


def _coloured_fraction(pixels: np.ndarray) -> float:
    return float(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).mean())


@pytest.mark.slow
@needs_chromium
def test_chromium_console_messages_are_caught(tmp_path):
    """Control: a blocked external image and a blocked script under the report's CSP are both logged, and a
    page without plots has no coloured pixels."""
    page = render({"artifacts": {"a": 1}}).replace(
        "</body>", '<img src="https://example.invalid/x.png"><script>console.error(1)</script></body>'
    )
    page_path = tmp_path / "control.html"
    page_path.write_text(page, encoding="utf-8")
    console = _chromium_screenshot(page_path, tmp_path / "control.png", tmp_path)
    assert "example.invalid" in console and "Executing inline script" in console
    assert _coloured_fraction(np.asarray(Image.open(tmp_path / "control.png").convert("RGB"), np.int32)) < 1e-4
