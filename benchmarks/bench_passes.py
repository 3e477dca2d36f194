"""The accuracy passes on MobileNetV2, every recipe in one run; writes the passes section of BENCHMARKS.md.

    python benchmarks/bench_passes.py       # (make bench) about 40 minutes on 2 cores

Every variant is one `edgeq quantize` command on the same float model and the same 64 calibration views (or none,
for --calib synthetic), evaluated in onnxruntime against fp32 on 256 photo views (top-1 agreement, logits SQNR) and on
1000 other views of the photos (agreement on 256 views moves by +-2 points between equivalent models: a tenth of
the views have a float top-2 margin under 0.13 logits, and those are the ones that flip).
1. The DFQ experiment (Nagel et al. 2019) with per-tensor int8 weights: naive (min/max weights rounded to nearest)
   vs equalization vs equalization + high-bias absorption + bias correction, next to the per-channel default.
2. Per-channel W8A8: round-to-nearest default vs bias correction, range search and AdaRound, and equalization
   scaled by weight ranges (the paper) vs by activation ranges (edgeq's default for per-channel weights).
3. W4A8 (4-bit per-channel weights): round-to-nearest vs AdaRound.
4. Data-free: --calib synthetic (distilled data, equalization, analytic bias correction) vs calibrated.
5. Equalization's change of the float model on the photo views.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quantize import (  # noqa: E402
    EDGEQ,
    machine,
    measured,
    mobilenet_photo_setup,
    replace_section,
    run_model,
)
from edgeq.measure.metrics import sqnr_db, top1_agreement  # noqa: E402
from models.photos import eval_views  # noqa: E402

MARKER = "## Accuracy passes"
NAIVE = ["--weight-range", "minmax", "--weight-rounding", "nearest"]
VARIANTS = {
    "dfq": {
        "per-tensor, naive (min/max, round to nearest)": ["--per-tensor", *NAIVE],
        "per-tensor + equalization": ["--per-tensor", *NAIVE, "--passes", "equalize"],
        "per-tensor + equalization + bias absorption + bias correction (analytic: data-free DFQ)": [
            "--recipe",
            "recipes/dfq.toml",
        ],
        "per-tensor + equalization + bias absorption + bias correction (empirical)": [
            "--per-tensor",
            *NAIVE,
            "--passes",
            "equalize",
            "--bias-correction",
            "empirical",
        ],
        "per-channel default (reference)": [],
    },
    "w8a8": {
        "per-channel, round to nearest": ["--weight-rounding", "nearest"],
        "per-channel default (sum-preserving rounding)": [],
        "+ bias correction": ["--bias-correction", "empirical"],
        "+ equalization by weight ranges (the paper's CLE) + bias correction": [
            "--passes",
            "equalize",
            "--equalize-scaling",
            "weights",
            "--bias-correction",
            "empirical",
        ],
        "+ equalization by activation ranges": ["--passes", "equalize"],
        "+ equalization by activation ranges + bias correction": [
            "--passes",
            "equalize",
            "--bias-correction",
            "empirical",
        ],
        "+ equalization by activation ranges + range search + bias correction": [
            "--passes",
            "equalize,range-search",
            "--bias-correction",
            "empirical",
        ],
        "+ equalization by activation ranges + AdaRound + bias correction": [
            "--passes",
            "equalize,adaround",
            "--bias-correction",
            "empirical",
        ],
        "+ equalization by activation ranges + range search + AdaRound + bias correction (recipes/w8a8.toml)": [
            "--recipe",
            "recipes/w8a8.toml",
        ],
    },
    "w4a8": {
        "W4A8 round to nearest": ["--weight-bits", "4", "--weight-rounding", "nearest"],
        "W4A8 sum-preserving rounding (default)": ["--weight-bits", "4"],
        "W4A8 AdaRound": ["--recipe", "recipes/w4a8.toml"],
        "W4A8 AdaRound + bias correction": ["--weight-bits", "4", "--passes", "adaround", "--bias-correction", "empirical"],
    },
    "data_free": {
        "calibrated (64 real views), default": [],
        "calibrated (64 real views) + equalization + analytic bias correction": [
            "--passes",
            "equalize",
            "--bias-correction",
            "analytic",
        ],
        "--calib synthetic (distilled data + equalization + analytic bias correction)": ["SYNTHETIC"],
    },
}


def float_change(model: Path, views: np.ndarray, calib: np.ndarray) -> dict:
    """How much equalization (each Relu6 policy) and high-bias absorption change the float model on real photos."""
    from edgeq.data import ArrayData, input_specs
    from edgeq.io.onnx_model import load_model, model_bytes
    from edgeq.passes.equalize import EqualizePass
    from edgeq.passes.preprocess import preprocess

    ref = run_model(model, views)
    variants = {
        "exact (equalization only)": {"clipped": "exact", "absorb_bias": False},
        "exact + high-bias absorption from BatchNorm statistics only": {"clipped": "exact"},
        "exact + high-bias absorption capped by the 64 calibration views": {"clipped": "exact", "data": True},
        "exact, scaled by activation ranges on the 64 views, capped absorption": {
            "clipped": "exact",
            "scaling": "activations",
            "data": True,
        },
        "to-relu (the paper's Relu6 -> Relu), no absorption": {"clipped": "to-relu", "absorb_bias": False},
    }
    rows = {}
    for name, options in variants.items():
        ir_model = load_model(model)
        preprocess(ir_model)
        if options.pop("data", False):
            options["data"] = ArrayData({"input": calib}, input_specs(ir_model), "calib64")
        equalized = EqualizePass(**options)(ir_model)
        out = run_model(model_bytes(ir_model), views)
        rows[name] = {
            "agreement": top1_agreement(ref, out),
            "sqnr_db": sqnr_db(ref, out),
            "max_relative_change": float(np.abs(out - ref).max() / np.abs(ref).max()),
            "absorbed_pairs": equalized.report["high_bias_absorbed_pairs"],
        }
    return rows


def main() -> None:
    start = time.perf_counter()
    model, calib, calib_inputs, views = mobilenet_photo_setup("passes")
    out = calib.parent
    ref = run_model(model, views)
    more_views = eval_views(1000, seed=3)
    more_ref = run_model(model, more_views)
    results: dict = {"float_change": float_change(model, views, calib_inputs)}
    print(json.dumps(results, indent=1), flush=True)
    for section, variants in VARIANTS.items():
        results[section] = {}
        for index, (name, flags) in enumerate(variants.items()):
            path = out / f"{section}_{index}.onnx"
            calib_flags = ["--calib", "synthetic", "--passes", "equalize", "--bias-correction", "analytic"]
            flags = calib_flags if flags == ["SYNTHETIC"] else ["--calib", str(calib), *flags]
            cost = measured([*EDGEQ, "quantize", str(model), "-o", str(path), "--no-progress", *flags])
            scores = run_model(path, views)
            more_scores = run_model(path, more_views)
            results[section][name] = {
                **cost,
                "agreement": top1_agreement(ref, scores),
                "sqnr_db": sqnr_db(ref, scores),
                "agreement_1000": top1_agreement(more_ref, more_scores),
                "sqnr_db_1000": sqnr_db(more_ref, more_scores),
                "flags": " ".join(flags).replace(str(calib), "calib64.npz"),
            }
            print(section, name, json.dumps(results[section][name]), flush=True)
    write_section(results, time.perf_counter() - start)


def write_section(results: dict, seconds: float) -> None:
    titles = {
        "dfq": "DFQ experiment: per-tensor int8 weights (int8 activations per tensor)",
        "w8a8": "Per-channel W8A8",
        "w4a8": "W4A8 (4-bit per-channel weights, 8-bit activations)",
        "data_free": "Data-free: `--calib synthetic`",
    }
    lines = [
        MARKER,
        "",
        f"Command: `python benchmarks/bench_passes.py` (whole run {seconds / 60:.1f} min)  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        "MobileNetV2 (torchvision weights), 256 photo views (and 1000 other views), calibration on 64 other views; top-1 agreement with fp32",
        "and logits SQNR; each row is one `edgeq quantize` command (the flags column), time and peak RSS of that command.",
        "",
    ]
    for section, title in titles.items():
        lines += [
            f"### {title}",
            "",
            "| recipe | agreement | SQNR dB | agreement, 1000 other views | SQNR dB, 1000 | quantize s | peak RSS MB | flags |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, row in results[section].items():
            lines.append(
                f"| {name} | {row['agreement']:.3f} | {row['sqnr_db']:.2f} | {row['agreement_1000']:.3f} | "
                f"{row['sqnr_db_1000']:.2f} | {row['seconds']:.1f} | "
                f"{row['peak_rss_mb']:.0f} | `{row['flags']}` |"
            )
        lines.append("")
    lines += [
        "### Equalization's effect on the float model (256 photo views)",
        "",
        "| EqualizePass | float agreement with the original | float SQNR dB | max relative change | absorbed pairs |",
        "|---|---|---|---|---|",
    ]
    for policy, row in results["float_change"].items():
        lines.append(
            f"| {policy} | {row['agreement']:.3f} | {row['sqnr_db']:.1f} | {row['max_relative_change']:.2e} | "
            f"{row['absorbed_pairs']} |"
        )
    lines.append("")
    replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
