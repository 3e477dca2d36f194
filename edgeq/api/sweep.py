"""``edgeq.sweep``: every (model, recipe) pair converted as one task (edgeq.scale, on Ray when it is installed),
then one comparison table and one plot.

Each pair runs ``edgeq.convert`` into ``<outdir>/<model>/<recipe>/`` (its artifacts and report.json, staged as
convert stages them). A pair that fails is a row with its one-line error; the others still run. The table
(``sweep.md``, ``sweep.csv``, ``sweep.json``) has one row per (model, recipe, target): the target's main artifact
and its size in bytes, the worst output SQNR (dB) and top-1 agreement against the float model on the evaluation
data (convert's ``validation``), the accuracy on its labels where the data has them, convert's wall time, and the
status. ``sweep.png`` plots artifact size against SQNR, one panel per model, one point per recipe and target.

A model is an ONNX file, with CALIB (and EVAL_DATA) given, or a folder holding ``model.onnx`` and ``calib.npz``
(and ``eval.npz``: the layout of ../shared/corpus/<case>/). A recipe is a TOML file or a set of recipe options
(``{"weight_bits": 4}``, or the text ``weight_bits=4,calib_method="minmax"`` with TOML values); none means the
defaults. On a cluster (ADDRESS), every node must see the models, data and OUTDIR at the same paths.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeq import targets as registry
from edgeq.api.convert import convert
from edgeq.errors import EdgeqError, RecipeError, first_line
from edgeq.io.figures import pyplot, save_png
from edgeq.io.files import json_text, output_dir, write_text_atomic
from edgeq.scale import check_address, map_tasks

MODEL_FILE, CALIB_FILE, EVAL_FILE = "model.onnx", "calib.npz", "eval.npz"
TABLE_NAME = "sweep"
COLUMNS = [
    "model", "recipe", "target", "status", "artifact", "artifact_bytes", "sqnr_db", "top1_agreement", "accuracy",
    "convert_seconds", "error",
]  # fmt: skip


@dataclass
class SweepResult:
    """One row per (model, recipe, target) in the order given (a failed pair: one row, target "-"), and the files
    written: the table as Markdown, CSV and JSON, and the plot."""

    outdir: Path
    rows: list[dict]
    tables: list[Path]
    plot: Path

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] != "ok"]


def sweep(
    models: Sequence[str | os.PathLike],
    recipes: Sequence[str | os.PathLike | Mapping] = (),
    *,
    outdir: str | os.PathLike,
    targets: str | Sequence[str] = ("onnxruntime",),
    calib=None,
    eval_data=None,
    verify_samples: int = 4,
    address: str | None = None,
    progress: bool = False,
) -> SweepResult:
    """Convert every model of MODELS with every recipe of RECIPES (files, option mappings or ``key=value,...``
    texts; none: the defaults) for TARGETS, each pair one task on ADDRESS (None: a Ray instance in this process;
    "host:port"/"auto": a cluster; "serial": no Ray), and write the table and plot into OUTDIR (module docstring).
    Bad input (a missing model, recipe file or data, an unknown target) raises an ``EdgeqError`` before anything
    runs; a pair that fails is a row with status "failed" (an ``EdgeqError``) or "internal error"."""
    check_address(address)
    names = [targets] if isinstance(targets, str) else list(targets)
    for name in names:
        if name != "all":
            registry.get(name)
    inputs = _model_inputs(models, calib, eval_data)
    variants = _recipes(recipes)
    with output_dir(outdir) as out:
        pairs = [
            {
                "model": label, "recipe": recipe_label, "source": source, "calib": model_calib, "eval_data": model_eval,
                "recipe_file": recipe_file, "options": options, "targets": names, "verify_samples": verify_samples,
                "outdir": str(out / label / recipe_label),
            }
            for label, source, model_calib, model_eval in inputs
            for recipe_label, recipe_file, options in variants
        ]  # fmt: skip
        rows = [row for rows in map_tasks(convert_pair, pairs, address=address, progress=progress, description="sweep") for row in rows]
        for row in rows:
            if row["artifact"]:
                row["artifact"] = os.path.relpath(row["artifact"], out)
        tables = _write_tables(rows, out)
        plot = out / f"{TABLE_NAME}.png"
        _plot(rows, plot)
    return SweepResult(out, rows, tables, plot)


def convert_pair(pair: dict) -> list[dict]:
    """One sweep task: PAIR's model converted with its recipe into its folder; a row per target, or one failed row."""
    start = time.perf_counter()
    try:
        result = convert(
            pair["source"], pair["calib"], outdir=pair["outdir"], targets=pair["targets"], eval_data=pair["eval_data"],
            recipe=pair["recipe_file"], verify_samples=pair["verify_samples"], **pair["options"],
        )  # fmt: skip
    except EdgeqError as exc:
        return [_row(pair, "failed", error=str(exc))]
    except Exception as exc:  # a bug in one pair: reported in its row, and the sweep goes on with the others
        return [_row(pair, "internal error", error=f"{type(exc).__name__}: {first_line(exc)}")]
    seconds = round(time.perf_counter() - start, 2)
    rows = []
    for target, report in result.targets.items():
        artifact = Path(report["artifacts"][0])
        outputs = report["validation"].get("outputs", {}).values()
        agreements = [o["top1_agreement"] for o in outputs if o.get("top1_agreement") is not None]
        row = _row(pair, "ok", target=target, artifact=str(artifact), artifact_bytes=artifact.stat().st_size)
        row.update(
            sqnr_db=min((o["sqnr_db"] for o in outputs), default=None),
            top1_agreement=min(agreements, default=None),
            accuracy=report["validation"].get("accuracy", {}).get("quantized"),
            convert_seconds=seconds,
        )
        rows.append(row)
    return rows


def _row(pair: dict, status: str, **values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(model=pair["model"], recipe=pair["recipe"], target="-", status=status)
    row.update(values)
    return row


def _model_inputs(models, calib, eval_data) -> list[tuple[str, str, str, str | None]]:
    """(label, model file, calibration data, evaluation data) per model: a folder's own files, or CALIB and
    EVAL_DATA for a model file."""
    if not models:
        raise RecipeError("sweep: give at least one model")
    inputs = []
    for model in map(Path, models):
        if model.is_dir():
            if not (model / MODEL_FILE).is_file() or not (model / CALIB_FILE).is_file():
                raise RecipeError(f"model folder {model} must hold {MODEL_FILE} and {CALIB_FILE}")
            own_eval = model / EVAL_FILE
            inputs.append((model.name, str(model / MODEL_FILE), str(model / CALIB_FILE), str(own_eval) if own_eval.is_file() else None))
        elif model.is_file():
            if calib is None:
                raise RecipeError(f"model {model}: give calibration data (--calib), or a folder with {CALIB_FILE}")
            inputs.append((model.stem, str(model), str(calib), None if eval_data is None else str(eval_data)))
        else:
            raise RecipeError(f"model {model} does not exist")
    if calib is not None and all(Path(m).is_dir() for m in models):
        raise RecipeError(f"calibration data {calib} is for a model file; every model given is a folder with its own")
    labels = _unique([label for label, *_ in inputs])
    return [(label, *rest) for label, (_, *rest) in zip(labels, inputs, strict=True)]


def _recipes(recipes) -> list[tuple[str, str | None, dict]]:
    """(label, recipe file, recipe options) per recipe, as convert takes them (options as its keyword arguments,
    what `edgeq convert`'s flags give); the defaults when none is given."""
    variants = []
    for recipe in recipes:
        if isinstance(recipe, Mapping):
            variants.append((",".join(f"{k}={v}" for k, v in recipe.items()) or "defaults", None, dict(recipe)))
        elif isinstance(recipe, str) and "=" in recipe:
            variants.append((recipe, None, parse_options(recipe)))
        elif Path(recipe).is_file():
            variants.append((Path(recipe).stem, str(recipe), {}))
        else:
            raise RecipeError(f"recipe file {recipe} does not exist")
    variants = variants or [("defaults", None, {})]
    labels = _unique([re.sub(r"[^\w.=-]+", "_", label).strip("_") or "recipe" for label, *_ in variants])
    return [(label, *rest) for label, (_, *rest) in zip(labels, variants, strict=True)]


def parse_options(text: str) -> dict:
    """``key=value,key=value`` as a recipe mapping: each value TOML (4, true, "minmax", ["adaround"]) or a bare
    word (minmax)."""
    options = {}
    for part in re.split(r",(?=\s*[A-Za-z_][\w-]*\s*=)", text):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"recipe options {text!r}: expected key=value[,key=value...], not {part!r}")
        try:
            options[key.strip()] = tomllib.loads(f"value = {value.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = value.strip()
    return options


def _unique(labels: list[str]) -> list[str]:
    """LABELS with a -2, -3 ... suffix on repeats, so that each names its own folder."""
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique


def _write_tables(rows: list[dict], out: Path) -> list[Path]:
    paths = [out / f"{TABLE_NAME}.{suffix}" for suffix in ("md", "csv", "json")]
    write_text_atomic(paths[0], format_table(rows) + "\n")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(paths[1], text.getvalue())
    write_text_atomic(paths[2], json_text({"columns": COLUMNS, "rows": rows}) + "\n")
    return paths


_FORMATS = {"sqnr_db": "{:.2f}", "top1_agreement": "{:.4f}", "accuracy": "{:.4f}", "convert_seconds": "{:.1f}"}


def format_table(rows: list[dict]) -> str:
    """ROWS as a Markdown table (empty cells where a value does not apply)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [
            "" if row[c] is None else _FORMATS.get(c, "{}").format(row[c]).replace("|", "\\|") for c in COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    """Artifact size against worst output SQNR: one panel per model, one labelled point per recipe and target."""
    plt = pyplot()
    models = list(dict.fromkeys(row["model"] for row in rows))
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for panel, model in zip(axes[0], models, strict=True):
        done = [r for r in rows if r["model"] == model and r["status"] == "ok" and r["sqnr_db"] is not None]
        for target in dict.fromkeys(r["target"] for r in done):
            points = [r for r in done if r["target"] == target]
            panel.scatter([r["artifact_bytes"] / 1024 for r in points], [r["sqnr_db"] for r in points], label=target)
            for r in points:
                panel.annotate(r["recipe"], (r["artifact_bytes"] / 1024, r["sqnr_db"]), fontsize=8)
        failed = sum(1 for r in rows if r["model"] == model and r["status"] != "ok")
        panel.set_title(model + (f" ({failed} failed)" if failed else ""))
        panel.set_xlabel("artifact size (KiB)")
        panel.set_ylabel("worst output SQNR vs float (dB)")
        panel.grid(alpha=0.3)
        if done:
            panel.legend()
    save_png(figure, path)
