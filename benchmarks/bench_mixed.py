"""Mixed precision side by side: uniform int8, uniform int4, the milp mix under budgets, the accuracy-aware mix and
onnxruntime's own quantizer, on MobileNetV2 and four corpus CNNs; writes BENCHMARKS.md's "Mixed precision" section.

    python benchmarks/bench_mixed.py            # prints the table
    python benchmarks/bench_mixed.py --write    # and replaces the section
    python benchmarks/bench_mixed.py --quick    # the corpus CNNs only (no MobileNetV2, no Ray timing)

Everything runs through edgeq's Python modules (edgeq.mixed) in one process: the per-layer sensitivity table
(timed serially in process, whose onnxruntime uses every core, and as Ray tasks on a real local cluster of one and
of two one-CPU worker nodes, tests/ray_cluster.py, and checked equal), the milp mix at the size of
uniform int8, at 0.85x and at 0.7x it (the smaller two also built with AdaRound, as `--passes adaround` builds
a chosen mix), the accuracy-aware mixes for --max-drop 0.5 (of the model's metric) for ONNX Runtime starting from
uniform int4 and from uniform int8, and for TFLite from uniform int8, and onnxruntime's quantize_static (uniform int8, per-channel, MinMax: benchmarks/ort_quantize.py), which
has no mixed-precision or accuracy-aware search of its own (its nodes_to_exclude is a list the user writes).
Sizes are the bytes of ONNX Runtime's model as written (4-bit weights packed as INT4); SQNR is the worst output's
and the metric MobileNetV2's top-1 agreement with fp32 or a corpus case's own (benchmarks/corpus_scores.py), both on
the evaluation samples. Ray timing: MobileNetV2 only.

Each edgeq row's layer choices are also converted to a .tflite as `edgeq convert --target tflite` does, with its
size, LiteRT latency, metric and bit-exactness, and each case gets a plot of the Pareto fronts of size and LiteRT
latency against the metric and SQNR, in benchmarks/results/ (benchmarks/mixed_litert.py; --no-litert skips them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from ray_cluster import local_cluster  # noqa: E402

import edgeq  # noqa: E402
from benchmarks import corpus_scores, mixed_litert  # noqa: E402
from benchmarks.bench_quantize import machine, mobilenet_photo_setup, replace_section  # noqa: E402
from benchmarks.ort_quantize import ort_worker  # noqa: E402
from edgeq.api.inputs import data_of  # noqa: E402
from edgeq.api.mixed import int16_tensors  # noqa: E402
from edgeq.io.onnx_model import load_model, model_bytes  # noqa: E402
from edgeq.mixed import accuracy_aware, allocation  # noqa: E402
from edgeq.mixed.int16_choice import choose_int16  # noqa: E402
from edgeq.mixed.sensitivity import measure_sensitivity  # noqa: E402
from edgeq.mixed.workbench import Workbench, run_model, worst_sqnr  # noqa: E402
from edgeq.quantization.recipe import Recipe  # noqa: E402

MARKER = "## Mixed precision"
PLOTS = REPO / "benchmarks" / "results"
CORPUS = corpus_scores.CORPUS
SENSITIVITY_SAMPLES = 64
ADAROUND_FACTORS = (0.85, 0.7)  # budgets whose milp mix is built with AdaRound too (1-4 minutes each)
ARENA_FACTORS = (1.5,)  # arena budgets, as multiples of uniform int8's TFLite Micro arena
CLUSTER_OBJECT_STORE_BYTES = 500_000_000  # per node; MobileNetV2: 60 MB shared, a 14 MB probe model per Hessian task


def cases(quick: bool) -> dict[str, tuple[Path, Path, Path, str, str]]:
    """name -> (float model, calibration .npz, evaluation .npz, --metric, the metric's name in the table):
    MobileNetV2 (not with QUICK) and the corpus CNNs small enough to sweep (benchmarks/corpus_scores.py)."""
    found = {}
    if not quick:
        model, calib, _, views = mobilenet_photo_setup("mixed")
        evaluation = calib.parent / "eval256.npz"
        np.savez(evaluation, input=views)
        found["MobileNetV2"] = (model, calib, evaluation, "agreement", "top-1 agreement %")
    for name in corpus_scores.CASES:
        case = CORPUS / name
        if case.is_dir():
            primary = json.loads((case / "case.json").read_text())["metric"]["primary"]
            metric = f"benchmarks.corpus_scores:{name}"
            found[name] = (case / "model.onnx", case / "calib.npz", case / "eval.npz", metric, f"{primary} x100")
    return found


def row(bench: Workbench, score, label: str, size: int, outputs: list[np.ndarray], extra: str = "", tflite=None) -> dict:
    """A table row: SCORE is the case's metric (edgeq.mixed.accuracy_aware.metric_of); TFLITE the recipe of its
    .tflite (mixed_litert.recipe, or mixed_litert.FLOAT), None for no .tflite."""
    return {
        "label": label,
        "size": size,
        "sqnr": worst_sqnr(bench.reference, outputs),
        "metric": score(bench.reference, outputs, None),
        "extra": extra,
        "tflite": tflite,
    }


def counts(layers: dict[str, str], table) -> str:
    base = len(table.layers) - len(layers)
    mix = {table.base_precision: base}
    for precision in layers.values():
        mix[precision] = mix.get(precision, 0) + 1
    return ", ".join(f"{n} {p}" for p, n in sorted(mix.items()) if n)


def adarounded(bench: Workbench, score, model: Path, calib: Path, layers: dict[str, str], label: str) -> dict:
    """The mix LAYERS built as `edgeq quantize --passes ... adaround` builds a chosen mix (the search ranks mixes
    rounded to nearest: edgeq.mixed.workbench), measured like the other rows."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = edgeq.quantize(
            model, calib, output=Path(tmp) / "mix.onnx", activation_type="auto", layers=layers,
            passes=[*bench.recipe.passes, "adaround"],
        )  # fmt: skip
        size = result.path.stat().st_size
    outputs = run_model(result.model.SerializeToString(), bench.feeds)
    return row(bench, score, label, size, outputs, f"the same layers; AdaRound {time.perf_counter() - start:.0f} s")


def benchmark(
    name: str, model: Path, calib: Path, evaluation: Path, metric: str, metric_title: str, ray_timing: bool,
    litert: bool = True,
) -> dict:  # fmt: skip
    score = accuracy_aware.metric_of(metric, None)
    source = load_model(model)
    data, eval_data = data_of(calib, source), data_of(evaluation, source)
    start = time.perf_counter()
    bench = Workbench.prepare(source, data, Recipe(activation_type="auto"), eval_data, samples=eval_data.num_samples)
    prepare_seconds = time.perf_counter() - start
    rule = allocation.TARGET_RULES["onnxruntime"]
    start = time.perf_counter()
    table = measure_sensitivity(bench, rule.precisions, samples=SENSITIVITY_SAMPLES, address="serial")
    timing = {"serial": time.perf_counter() - start}
    if ray_timing:
        for workers in (1, 2):
            with local_cluster(workers, CLUSTER_OBJECT_STORE_BYTES) as address:
                start = time.perf_counter()
                on_ray = measure_sensitivity(bench, rule.precisions, samples=SENSITIVITY_SAMPLES, address=address)
                timing[workers] = time.perf_counter() - start
            timing["same"] = timing.get("same", True) and (on_ray.sqnr_db, on_ray.omega) == (table.sqnr_db, table.omega)
    float_size = len(model.read_bytes())
    rows = [row(bench, score, "fp32", float_size, bench.reference, tflite=mixed_litert.FLOAT)]
    base = bench.build({})
    rows.append(row(bench, score, "edgeq uniform int8", base.size, base.outputs, counts({}, table), mixed_litert.recipe()))
    all_int4 = {layer.name: "int4" for layer in table.layers}
    int4 = bench.build(all_int4)
    rows.append(row(bench, score, "edgeq uniform int4 weights", int4.size, int4.outputs, tflite=mixed_litert.recipe(all_int4)))
    sizes = allocation.byte_model(bench, table, rule)
    for factor in (1.0, 0.85, 0.7):
        budget = int(factor * base.size)
        try:
            chosen = allocation.allocate(bench, table, budget, rule, sizes)
        except Exception as exc:  # an unreachable budget is a result too
            rows.append({"label": f"edgeq milp, budget {factor:.2f}x int8", "size": budget, "sqnr": float("nan"),
                         "metric": float("nan"), "extra": str(exc)})  # fmt: skip
            continue
        rows.append(row(bench, score, f"edgeq milp, budget {factor:.2f}x int8", chosen.measured.size,
                        chosen.measured.outputs, counts(chosen.layers, table), mixed_litert.recipe(chosen.layers)))  # fmt: skip
        if factor in ADAROUND_FACTORS:
            rows.append(adarounded(bench, score, model, calib, chosen.layers, f"edgeq milp, budget {factor:.2f}x int8, AdaRound"))
    int16 = int16_tensors(bench)
    base_arena = int16.arena_of({})
    for factor in ARENA_FACTORS:
        budget = allocation.Budget(arena=int(factor * base_arena))
        start = time.perf_counter()
        chosen = allocation.allocate(bench, table, budget, allocation.TARGET_RULES["tflm"], sizes, int16)
        rows.append(row(bench, score, f"edgeq milp, arena {factor:.2f}x int8 (TFLite Micro)", chosen.measured.size,
                        chosen.measured.outputs,
                        f"{len(chosen.int16_tensors)} of {len(int16.candidates())} tensors int16; arena {chosen.arena} B "
                        f"(int8 {base_arena} B), {time.perf_counter() - start:.0f} s",
                        mixed_litert.recipe(chosen.layers)))  # fmt: skip
    int4_bench = Workbench.prepare(source, data, Recipe(activation_type="auto", weight_bits=4), eval_data,
                                   samples=eval_data.num_samples)  # fmt: skip
    int4_table = measure_sensitivity(int4_bench, rule.precisions, samples=SENSITIVITY_SAMPLES, address="serial")
    searches = (
        ("from int4", int4_bench, int4_table, rule, 4),
        ("from int8", bench, table, rule, 8),
        ("for TFLite, from int8", bench, table, allocation.TARGET_RULES["tflite"], 8),
    )
    for label, search_bench, search_table, search_rule, bits in searches:
        start = time.perf_counter()
        found = accuracy_aware.search(search_bench, search_table, search_rule, max_drop=0.5, metric=metric,
                                      sensitivity_samples=SENSITIVITY_SAMPLES)  # fmt: skip
        seconds = time.perf_counter() - start
        final = search_bench.build(found.layers)
        moved = f"{len(found.moved_tensors)} of {len(found.tensors.sqnr_db)} tensors {found.tensors.precision}, " if found.tensors else ""
        rows.append(row(search_bench, score, f"edgeq accuracy-aware (max drop 0.5, {label})", final.size, final.outputs,
                        f"{len(found.reverted_layers)} weight reverts, {moved}{'met' if found.met else 'NOT met'}, "
                        f"{seconds:.0f} s", mixed_litert.recipe(found.layers, weight_bits=bits)))  # fmt: skip
    start = time.perf_counter()
    choice = choose_int16(source, data, Recipe(activation_type="auto"))
    int16_model = model_bytes(choice.quantized.model)
    rows.append(row(bench, score, "edgeq int16 tensors by measured error (for TFLite)", len(int16_model),
                    run_model(int16_model, bench.feeds),
                    f"{choice.report['int16_tensors']} of {choice.report['candidates']} tensors int16, "
                    f"{time.perf_counter() - start:.0f} s",
                    mixed_litert.recipe(choice.recipe.layers, calib_method=choice.recipe.calib_method)))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ort.onnx"
        ort_worker(str(model), str(calib), str(out), "MinMax", "QUInt8")
        rows.append(row(bench, score, "onnxruntime quantize_static int8 (MinMax)", out.stat().st_size,
                        run_model(out.read_bytes(), bench.feeds)))  # fmt: skip
    start = time.perf_counter()
    if litert:
        mixed_litert.add_columns(rows, model, calib, evaluation, bench.feeds, bench.reference, score)
    litert_seconds = time.perf_counter() - start
    return {
        "name": name,
        "metric": metric_title,
        "layers": len(table.layers),
        "samples": len(bench.reference[0]),
        "rows": rows,
        "timing": timing,
        "prepare_seconds": prepare_seconds,
        "spearman": table.spearman(),
        "litert_seconds": litert_seconds if litert else None,
    }


def section(results: list[dict], seconds: float, plots: dict[str, Path] | None = None) -> list[str]:
    """BENCHMARKS.md's section; PLOTS: case name -> its PNG (linked relative to the repository)."""
    lines = [
        MARKER,
        "",
        f"Command: `python benchmarks/bench_mixed.py --write` (whole run {seconds / 60:.1f} min)  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}",
        "",
        "ONNX Runtime's model (uint8 activations on x86, per-channel weights; 4-bit weights packed as INT4). Worst",
        "output SQNR and the model's metric against fp32 on the evaluation samples (MobileNetV2: top-1 agreement; a",
        "corpus case: its case.json's primary metric, x100), sizes the files' bytes. The milp",
        "mixes choose float, int8 or int4 per weighted layer from the per-layer sensitivity table",
        f"({SENSITIVITY_SAMPLES} samples, docs/mixed-precision.md), ranking mixes rounded to nearest; the AdaRound rows",
        "build the same mix as `edgeq quantize --budget ... --passes adaround` builds its chosen one (AdaRound",
        "learns each layer's rounding: needs the torch extra). The accuracy-aware mixes move layers' weights from",
        "int4 to int8 in the table's order, then activation tensors (with their writers and readers) to float for",
        "ONNX Runtime or to int16 for TFLite in the order of their measured sensitivity, until the metric's drop",
        "is at most 0.5 (docs/mixed-precision.md). The arena row is `edgeq convert --target tflm --budget arena=...`'s",
        "choice at 1.5x uniform int8's TFLite Micro arena: int16 tensors (16x8 kernels) chosen by the program",
        "within the arena, measured in TFLite Micro.",
        "",
        *mixed_litert.SECTION_NOTE,
        "",
    ]
    for result in results:
        lines += [
            f"### {result['name']} ({result['layers']} weighted layers, {result['samples']} evaluation samples)",
            "",
            f"| build | size KB | worst SQNR dB | {result['metric']} | layers "
            + mixed_litert.COLUMNS.format(metric=result["metric"]),
            "|---" * (5 + mixed_litert.COLUMNS.count("|") - 1) + "|",
        ]
        for r in result["rows"]:
            lines.append(f"| {r['label']} | {r['size'] / 1000:.1f} | {r['sqnr']:.2f} | {r['metric']:.2f} | {r['extra']} "
                         + mixed_litert.cells(r))  # fmt: skip
        timing = result["timing"]
        ray = (
            f"; as Ray tasks on a local cluster (`ray start`, one-CPU nodes) of 1 worker {timing[1]:.1f} s and of 2 "
            f"workers {timing[2]:.1f} s ({timing[1] / timing[2]:.2f}x the 1-worker speed), "
            f"{'the same table' if timing['same'] else 'a DIFFERENT table'} as serially"
            if 2 in timing
            else ""
        )
        lines += [
            "",
            f"Sensitivity table: serially {timing['serial']:.1f} s{ray}. Spearman rank correlation of HAWQ-V2's",
            f"Omega (int4) with the measured int4 SQNR loss: {result['spearman']}.",
            "",
        ]
        if plots and result["name"] in plots:
            link = Path(os.path.relpath(plots[result["name"]], REPO)).as_posix()
            lines += [f"LiteRT columns: {result['litert_seconds']:.0f} s. Size and LiteRT latency against "
                      f"{result['metric']} and SQNR, Pareto fronts dashed: [{link}]({link})", "",
                      f"![{result['name']}: Pareto fronts]({link})", ""]  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's Mixed precision section")
    parser.add_argument("--quick", action="store_true", help="the corpus CNNs only (no MobileNetV2, no Ray timing)")
    parser.add_argument("--no-litert", action="store_true", help="no .tflite columns and no plots")
    parser.add_argument("--plots", type=Path, default=PLOTS, help=f"folder of the PNGs (default {PLOTS.relative_to(REPO)})")
    args = parser.parse_args()
    start = time.perf_counter()
    results = []
    for name, (model, calib, evaluation, metric, title) in cases(args.quick).items():
        print(f"{name} ...", flush=True)
        results.append(benchmark(name, model, calib, evaluation, metric, title, ray_timing=name == "MobileNetV2",
                                 litert=not args.no_litert))  # fmt: skip
    plots = {}
    for result in results if not args.no_litert else []:
        plots[result["name"]] = args.plots.resolve() / f"mixed_{result['name']}.png"
        mixed_litert.plot_case(result, plots[result["name"]])
    lines = section(results, time.perf_counter() - start, plots)
    print("\n".join(lines))
    if args.write:
        replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
