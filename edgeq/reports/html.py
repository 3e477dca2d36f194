"""One self-contained HTML page that reports on a quantized model: accuracy, latency, compute, memory, recipe.

``render(data)`` returns the page; ``write_report(path, data)`` writes it atomically. Every section is optional
and rendered only when its key is in DATA:

    "title"      str
    "compare"    {label: edgeq.reports.compare.compare() result}: per-output SQNR / max error / top-1 agreement, and
                 per-layer SQNR against the float model, one line per label (edgeq.reports.compare.plot_layers) and a
                 table with one column per label
    "profiles"   [edgeq.reports.profile.profile() result, ...]: latency
                 percentiles; for ORT profiles with "per_op" (ORT's own profiler, mean kernel time per node) a
                 bar chart of the time per op type and the slowest nodes
    "analysis"   {"layers": [{"name", "op", "macs", "params", "output_bytes"}, ...],
                  "summary": {"params", "param_bytes", "macs", "peak_activation_bytes", "peak_at"}}
                 (edgeq.measure.footprint): MACs and output bytes per layer as bars, the totals and the activation peak
    "artifacts"  {path or label: size in bytes}
    "recipe"     edgeq.quantization.recipe.Recipe.to_dict()
    "quantize"   the quantize report (edgeq.pipeline.Pipeline.quantize): every stage that ran and what it did, the
                 quantized op counts, the calibration, and the "warnings" and "float_nodes" (ops left float,
                 biases whose weight scale was raised or that stayed float), which the design requires to be
                 listed, never silent

Self-contained means the page loads nothing: plots are PNGs in ``data:`` URIs (RFC 2397) drawn by matplotlib's
Agg backend (no display needed), the style sheet is inline, and a Content-Security-Policy meta tag
(``default-src 'none'``, W3C CSP Level 3) makes the browser refuse any other load and any script, so the file can
be attached to a CI run or mailed and opened offline. Text from the data (tensor and node names come from user
models) goes through ``html.escape`` everywhere, including attribute values.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from importlib.metadata import version
from pathlib import Path

from edgeq.io.figures import png_bytes, pyplot
from edgeq.io.files import write_text_atomic
from edgeq.reports.compare import layer_order, plot_layers

SLOWEST_NODES = 10  # rows of the per-node latency table; the bar chart has every op type

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.warn { color: #a40; } pre { margin: 0; white-space: pre-wrap; }
footer { margin-top: 3em; color: #777; font-size: 0.9em; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render(data: dict) -> str:
    """The report page for DATA (see the module docstring for its keys)."""
    title = data.get("title", "edgeq report")
    sections = []
    if "compare" in data:
        sections.append(_accuracy_section(data["compare"]))
    if "profiles" in data:
        sections.append(_latency_section(data["profiles"]))
    if "analysis" in data:
        sections.append(_analysis_section(data["analysis"]))
    if "artifacts" in data:
        sections.append(_artifacts_section(data["artifacts"]))
    if "recipe" in data or "quantize" in data:
        sections.append(_quantization_section(data.get("recipe"), data.get("quantize")))
    if "quantize" in data:
        sections.append(_warnings_section(data["quantize"]))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{_esc(title)}</h1>",
            *sections,
            f"<footer>written by edgeq {_esc(version('edgeq'))}</footer>",
            "</body></html>",
            "",
        ]
    )


def write_report(path: str | os.PathLike, data: dict) -> Path:
    """Render DATA and write it to PATH atomically (temp file + rename)."""
    write_text_atomic(path, render(data))
    return Path(path)


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _scalar(value) -> str:
    """A scalar as text: integers with thousands separators, floats to 4 significant digits, infinite SQNR
    (no error at all) as "exact"."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "exact" if value > 0 else "-inf"
        return f"{value:.4g}"
    return _esc(value)


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells in the NUMERIC columns are formatted with _scalar and right-aligned."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [
            f'<td class="num">{_scalar(cell)}</td>' if i in numeric else f"<td>{_esc(cell)}</td>"
            for i, cell in enumerate(row)
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{encoded}">'


def _accuracy_section(results: dict[str, dict]) -> str:
    rows = [
        [label, name, row["sqnr_db"], row["max_abs_error"], row.get("top1_agreement")]
        for label, result in results.items()
        for name, row in result["outputs"].items()
    ]
    parts = [
        "<section><h2>Accuracy against the float model</h2>",
        "<p>SQNR = 10 log10(&Sigma; x<sub>float</sub><sup>2</sup> / &Sigma; (x<sub>float</sub> &minus; "
        "x<sub>quant</sub>)<sup>2</sup>) over all samples (edgeq compare).</p>",
        _table(["model", "output", "SQNR dB", "max abs error", "top-1 agreement"], rows, {2, 3, 4}),
    ]
    if any(result["layers"] for result in results.values()):
        with tempfile.TemporaryDirectory() as tmp:
            plot_path = Path(tmp) / "sqnr.png"
            plot_layers(results, plot_path)
            parts.append(_image(plot_path.read_bytes(), "per-layer SQNR against the float model"))
        layer_names = layer_order(results)
        layer_rows = [
            [i, name, *(result["layers"].get(name, {}).get("sqnr_db") for result in results.values())]
            for i, name in enumerate(layer_names)
        ]
        headers = ["#", "layer", *(f"{label} SQNR dB" for label in results)]
        parts.append(
            f"<details><summary>per-layer SQNR ({len(layer_names)} layers, graph order)</summary>"
            f"{_table(headers, layer_rows, set(range(2, len(headers))) | {0})}</details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _latency_rows(profile: dict) -> list[list]:
    """One row per runtime configuration: ORT profiles have one, LiteRT profiles one per kernel set."""
    latency = profile["latency_ms"]
    if all(isinstance(v, dict) for v in latency.values()):
        return [
            [profile["artifact"], f"LiteRT, {kernels} kernels", profile["threads"], row["runs"], row["p50"],
             row["p90"], row["min"]]
            for kernels, row in latency.items()
        ]
    return [
        [profile["artifact"], profile["runtime"], profile["threads"], profile["runs"], latency["p50"],
         latency["p90"], latency["min"]]
    ]


def _latency_section(profiles: list[dict]) -> str:
    rows = [row for profile in profiles for row in _latency_rows(profile)]
    parts = [
        "<section><h2>Latency</h2>",
        _table(["artifact", "runtime", "threads", "runs", "p50 ms", "p90 ms", "min ms"], rows, {2, 3, 4, 5, 6}),
    ]
    for profile in profiles:
        artifact = Path(profile["artifact"]).name
        if "fusion" in profile:
            fusion = profile["fusion"]
            left = ", ".join(fusion["float_compute"]) or "none"
            parts.append(
                f"<p>{_esc(artifact)}: {fusion['convs_fused']}/{fusion['convs_total']} convolutions run as "
                f"integer kernels in ORT's optimized graph; float compute ops left: {_esc(left)}.</p>"
            )
        if "tflm" in profile:
            tflm = profile["tflm"]
            parts.append(
                f"<p>{_esc(artifact)} in TFLite Micro: arena {_scalar(tflm['arena_bytes'])} B (the smallest "
                f"that runs), flash {_scalar(tflm['flash_bytes'])} B, resolver ops "
                f"{_esc(', '.join(tflm['resolver_ops']))}.</p>"
            )
        if "per_op" in profile:
            parts.append(_per_op_html(artifact, profile))
    parts.append("</section>")
    return "\n".join(parts)


def _per_op_html(artifact: str, profile: dict) -> str:
    per_op = profile["per_op"]
    by_type = per_op["by_op_type"]
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(10, 0.9 + 0.32 * len(by_type)))
    names = list(by_type)[::-1]  # slowest on top
    axes.barh(names, [by_type[name] for name in names], color="#4c72b0")
    axes.set_xlabel("mean kernel time per run (ms)")
    axes.set_title(f"{artifact}: time per op type ({per_op['runs']} profiled runs)")
    axes.grid(axis="x", alpha=0.3)
    fraction = per_op["fraction_of_latency"]
    covered = (
        f" ({fraction:.0%} of the profiled runs' mean latency, measured in the same session)"
        if fraction is not None
        else ""
    )
    total = per_op["sum_ms"]
    node_rows = [
        [row["node"], row["op_type"], row["ms"], row["ms"] / total if total else None]
        for row in per_op["by_node"][:SLOWEST_NODES]
    ]
    return "\n".join(
        [
            f"<h3>{_esc(artifact)}: time per op type</h3>",
            f"<p>ORT profiler, kernel time summed over nodes: {total:.4g} ms per run{covered}. Profiling adds "
            "its own cost to every node, so the shares between op types are the figure to read.</p>",
            _image(png_bytes(figure), f"{artifact}: time per op type"),
            f"<details><summary>slowest {len(node_rows)} of {len(per_op['by_node'])} nodes</summary>"
            f"{_table(['node', 'op type', 'ms', 'share of kernel time'], node_rows, {2, 3})}</details>",
        ]
    )


def _analysis_section(analysis: dict) -> str:
    parts = ["<section><h2>Compute and activation memory</h2>"]
    if "summary" in analysis:
        summary = analysis["summary"]
        rows = [
            ["parameters", summary["params"]],
            ["parameter bytes", summary["param_bytes"]],
            ["MACs per inference", summary["macs"]],
            ["peak activation bytes", summary["peak_activation_bytes"]],
        ]
        parts.append(_table(["", "value"], rows, {1}))
        parts.append(f"<p>The activation peak is at {_esc(summary['peak_at'])}.</p>")
    layers = analysis.get("layers", [])
    if layers:
        plt = pyplot()
        figure, (mac_axes, byte_axes) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
        positions = range(len(layers))
        mac_axes.bar(positions, [row["macs"] for row in layers], color="#4c72b0")
        mac_axes.set_ylabel("MACs")
        byte_axes.bar(positions, [row["output_bytes"] for row in layers], color="#dd8452")
        byte_axes.set_ylabel("output bytes")
        byte_axes.set_xlabel("layer (execution order)")
        for axes in (mac_axes, byte_axes):
            axes.grid(axis="y", alpha=0.3)
        parts.append(_image(png_bytes(figure), "MACs and output bytes per layer"))
        rows = [[i, row["name"], row["op"], row["macs"], row["params"], row["output_bytes"]] for i, row in
                enumerate(layers)]
        parts.append(
            f"<details><summary>per-layer table ({len(layers)} layers)</summary>"
            f"{_table(['#', 'layer', 'op', 'MACs', 'params', 'output bytes'], rows, {0, 3, 4, 5})}</details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _artifacts_section(artifacts: dict[str, int]) -> str:
    rows = [[name, size, size / 1024] for name, size in artifacts.items()]
    return f"<section><h2>Artifacts</h2>{_table(['artifact', 'bytes', 'KiB'], rows, {1, 2})}</section>"


def _value_html(value) -> str:
    """Scalars as text, lists as comma-separated text, nested structures as indented JSON."""
    if isinstance(value, dict):
        return f"<pre>{_esc(json.dumps(value, indent=1, default=str))}</pre>"
    if isinstance(value, list):
        return _esc(", ".join(map(str, value))) if value else "(none)"
    return _scalar(value)


def _key_values(table: dict) -> str:
    rows = "".join(f"<tr><th>{_esc(key)}</th><td>{_value_html(value)}</td></tr>" for key, value in table.items())
    return f"<table><tbody>{rows}</tbody></table>"


def _quantization_section(recipe: dict | None, report: dict | None) -> str:
    parts = ["<section><h2>Quantization</h2>"]
    if recipe is not None:
        parts.append("<h3>Recipe</h3>")
        parts.append(_key_values(recipe))
    if report is not None:
        calibration = report["calibration"]
        parts.append(
            f"<p>Activations {_esc(report['activation_type'])}; calibrated on {_scalar(calibration['samples'])} "
            f"samples with {_esc(calibration['method'])} ranges in {_scalar(calibration['seconds'])} s; "
            f"{_scalar(report['quantized_tensors'])} quantized tensors, "
            f"{_scalar(report['fused_activations'])} fused activations.</p>"
        )
        parts.append("<h3>Quantized ops</h3>")
        parts.append(_table(["op type", "nodes"], list(map(list, report["quantized_nodes"].items())), {1}))
        parts.append("<h3>Stages</h3>")
        parts.append(_key_values(report.get("stages", report.get("passes", {}))))
    parts.append("</section>")
    return "\n".join(parts)


def _warnings_section(report: dict) -> str:
    warnings = report["warnings"]
    float_nodes = report["float_nodes"]
    parts = ["<section><h2>Warnings</h2>"]
    if not warnings and not float_nodes:
        parts.append("<p>None: every quantizable op is quantized and every bias is int32.</p>")
    if warnings:
        items = "".join(f'<li class="warn">{_esc(text)}</li>' for text in warnings)
        parts.append(f"<ul>{items}</ul>")
    if float_nodes:
        parts.append(f"<h3>Ops left in float ({len(float_nodes)})</h3>")
        parts.append(_table(["node", "why"], list(map(list, float_nodes.items()))))
    parts.append("</section>")
    return "\n".join(parts)
