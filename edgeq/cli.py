"""The ``edgeq`` command line: export, quantize, convert, profile, compare.

Every command turns a bad input into one line on stderr and exit status 2 (``--debug`` shows the traceback),
writes its artifacts atomically, and never overwrites an input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from edgeq.errors import EdgeqError
from edgeq.io.files import check_output_path, prepare_output_dir, write_text_atomic
from edgeq.quantization.recipe import (
    ACTIVATION_CHOICES,
    BIAS_CORRECTIONS,
    CALIB_METHODS,
    EQUALIZE_CLIPS,
    EQUALIZE_SCALINGS,
    WEIGHT_RANGES,
    WEIGHT_ROUNDINGS,
)

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


class _Group(click.Group):
    """Turns EdgeqError (and, without --debug, any other failure) into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeqError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"edgeq: error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`edgeq compare ... | head`): nothing left to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(
                f"edgeq: error: {type(exc).__name__}: {first} (run with --debug for details)", err=True
            )
            sys.exit(EXIT_INTERNAL_ERROR)


def _emit_json(data: dict, path: str | None) -> None:
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=True)
    if path:
        write_text_atomic(path, text + "\n")
    else:
        click.echo(text)


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


@click.group(cls=_Group)
@click.version_option(package_name="edgeq")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgeq: quantize trained models into verified integer artifacts for edge devices."""
    ctx.obj = {"debug": debug}


def _quant_options(f):
    options = [
        click.option(
            "--calib",
            "calib",
            required=True,
            help="Calibration data: an .npz (keys = input names), an image folder, or module:function.",
        ),
        click.option(
            "--image-spec",
            default=None,
            help="Preprocessing for an image folder, e.g. 'resize=256,crop=224,mean=0.485/0.456/0.406,"
            "std=0.229/0.224/0.225,layout=NCHW'.",
        ),
        click.option(
            "--recipe",
            type=click.Path(dir_okay=False),
            default=None,
            help="A TOML recipe pinning every option below (options given here override it).",
        ),
        click.option(
            "--activation-type", type=click.Choice(list(ACTIVATION_CHOICES)), default=None
        ),
        click.option("--weight-bits", type=click.Choice(["8", "4"]), default=None),
        click.option(
            "--per-tensor", is_flag=True, default=None, help="Per-tensor weights (default per channel)."
        ),
        click.option(
            "--weight-range",
            type=click.Choice(list(WEIGHT_RANGES)),
            default=None,
            help="How weight scales are chosen (mse searches a clipping threshold per channel).",
        ),
        click.option(
            "--weight-rounding",
            type=click.Choice(list(WEIGHT_ROUNDINGS)),
            default=None,
            help="Round weights to nearest, or keep each output channel's integer sum (default).",
        ),
        click.option(
            "--calib-method", type=click.Choice(list(CALIB_METHODS)), default=None
        ),
        click.option(
            "--percentile", type=float, default=None, help="Percentile for --calib-method percentile."
        ),
        click.option(
            "--passes",
            default=None,
            help="Optional passes to add, comma-separated: equalize,range-search,adaround,bias-correction (run in pipeline order).",
        ),
        click.option(
            "--bias-correction",
            type=click.Choice(list(BIAS_CORRECTIONS)),
            default=None,
            help="Add bias correction: measured on the calibration data, or from BatchNorm statistics (data-free).",
        ),
        click.option(
            "--equalize-clip",
            type=click.Choice(list(EQUALIZE_CLIPS)),
            default=None,
            help="Relu6 between equalized layers: exact (a per-channel Min, the default), to-relu (changes the "
            "float model), keep (not equalized). See passes/equalize.py.",
        ),
        click.option(
            "--equalize-scaling",
            type=click.Choice(list(EQUALIZE_SCALINGS)),
            default=None,
            help="Equalization scales from weight ranges (the paper; for per-tensor weights) or from activation "
            "ranges on the calibration data (for per-channel weights); auto (the default) picks by --per-tensor.",
        ),
        click.option(
            "--dyadic-bits",
            type=click.IntRange(1, 31),
            default=None,
            help="Significand width of every requantization multiplier (31, TFLite's, changes nothing; 16 or 8 "
            "for integer accelerators). See passes/dyadic.py.",
        ),
        click.option(
            "--pow2", is_flag=True, default=None, help="Power-of-two scales: every requantization is a shift."
        ),
        click.option(
            "--exclude", multiple=True, help="Keep nodes float: a node name, an op type or a regex."
        ),
        click.option("--max-calib-samples", type=int, default=None),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _recipe_from(opts: dict):
    from edgeq.quantization.recipe import load_recipe

    recipe = load_recipe(opts["recipe"])
    if opts["calib"] == "synthetic":  # data-free mode: equalization and analytic bias correction by default
        # Equalization by weight ranges: 8 distilled inputs are too few to scale by activation ranges
        # (MobileNetV2: 0.688 agreement that way, 0.809 by weights, on views the benchmark does not use).
        recipe = recipe.updated(
            passes=sorted({*recipe.passes, "equalize", "bias-correction"}),
            bias_correction="analytic" if opts["bias_correction"] is None else None,
            equalize_scaling="weights" if recipe.equalize_scaling == "auto" else None,
        )
    return recipe.updated(
        activation_type=opts["activation_type"],
        weight_bits=int(opts["weight_bits"]) if opts["weight_bits"] else None,
        per_channel=False if opts["per_tensor"] else None,
        weight_range=opts["weight_range"],
        weight_rounding=opts["weight_rounding"],
        calib_method=opts["calib_method"],
        percentile=opts["percentile"],
        passes=_passes(opts["passes"], recipe.passes, opts["bias_correction"]),
        bias_correction=opts["bias_correction"],
        equalize_clip=opts["equalize_clip"],
        equalize_scaling=opts["equalize_scaling"],
        dyadic_bits=opts["dyadic_bits"],
        pow2=opts["pow2"],
        exclude=list(opts["exclude"]) or None,
        max_calib_samples=opts["max_calib_samples"],
    )


def _passes(option: str | None, recipe_passes: list[str], bias_correction: str | None) -> list[str] | None:
    """--passes replaces the recipe's list; --bias-correction MODE adds the pass."""
    passes = [p.strip() for p in option.split(",") if p.strip()] if option is not None else None
    if bias_correction is not None:
        passes = [*(passes if passes is not None else recipe_passes), "bias-correction"]
    return passes


def _open_data(source: str, model, image_spec: str | None, max_samples: int | None, *, progress: bool = True):
    from edgeq.data.sources import input_specs, open_data, parse_image_spec

    if source == "synthetic":  # data-free: inputs distilled from the model's BatchNorm statistics (ZeroQ)
        from edgeq.calibration.synthetic import distill
        from edgeq.io.onnx_model import clone_model
        from edgeq.passes.preprocess import preprocess

        preprocessed = clone_model(model)
        preprocess(preprocessed)
        return distill(preprocessed, progress=progress)

    spec = parse_image_spec(image_spec) if image_spec else None
    return open_data(source, input_specs(model), image_spec=spec, max_samples=max_samples)


@main.command()
@click.argument("factory")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="The ONNX file to write."
)
@click.option(
    "--input-shape", default=None, help="Example input shape, e.g. 1,3,224,224 (if the factory gives none)."
)
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--static-batch", is_flag=True, help="Keep the batch dimension fixed.")
def export(factory: str, output: str, input_shape: str | None, opset: int, static_batch: bool) -> None:
    """Export a PyTorch module (MODULE:FACTORY) to ONNX, checked against torch."""
    from edgeq.api.export import export_factory

    check_output_path(output)
    result = export_factory(
        factory, output, input_shape=input_shape, opset=opset, dynamic_batch=not static_batch
    )
    click.echo(f"wrote {output} ({result})")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="The QDQ ONNX file to write."
)
@_quant_options
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write a JSON report."
)
def quantize(model: str, output: str, report_path: str | None, **opts) -> None:
    """Calibrate MODEL and write its QDQ (QuantizeLinear/DequantizeLinear) int8 model."""
    from edgeq.io.onnx_model import load_model, save_model
    from edgeq.pipeline import Pipeline

    check_output_path(output, model, opts["calib"])
    if report_path:
        check_output_path(report_path, model, output, opts["calib"])
    recipe = _recipe_from(opts)
    if recipe.activation_type == "auto":
        raise EdgeqError(
            "--activation-type auto is chosen per target: use 'edgeq convert --target onnxruntime'"
        )
    float_model = load_model(model)
    data = _open_data(
        opts["calib"],
        float_model,
        opts["image_spec"],
        recipe.max_calib_samples,
        progress=not opts["no_progress"],
    )
    qdq, report = Pipeline(recipe, progress=not opts["no_progress"]).run(float_model, data)
    save_model(qdq, output, model, opts["calib"])
    report = {"input": model, "output": output, "recipe": recipe.to_dict(), **report}
    if report_path:
        _emit_json(report, report_path)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report["quantized_nodes"].items()))
    click.echo(f"wrote {output}: quantized {counts}; {len(report['float_nodes'])} node(s) left float")
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--target",
    type=click.Choice(["onnxruntime", "tflite", "tflm", "all"]),
    default="onnxruntime",
    show_default=True,
    help="tflm writes the .tflite plus a C array, the op list and the measured arena; all = every target.",
)
@click.option(
    "-o", "--outdir", required=True, type=click.Path(file_okay=False), help="Folder for the artifacts."
)
@_quant_options
@click.option("--eval-data", default=None, help="Data to validate on (default: the calibration data).")
@click.option("--ort-format", is_flag=True, help="Also write .ort and required_operators.config.")
@click.option(
    "--io",
    type=click.Choice(["int8", "uint8", "float"]),
    default="int8",
    show_default=True,
    help="Input/output type of the .tflite (int8 is what microcontrollers want).",
)
@click.option(
    "--precision",
    type=click.Choice(["int8", "float"]),
    default="int8",
    show_default=True,
    help="float also writes <name>.float.tflite, the same graph in float32, for speed comparisons.",
)
@click.option(
    "--report-html",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write this self-contained HTML report on the artifacts (see `edgeq report`).",
)
@click.option(
    "--integer-only",
    is_flag=True,
    help="Also write <name>.integer.onnx: integer arithmetic only between the input Quantize and the output "
    "Dequantize, bit-exact with the integer reference (needs --target onnxruntime or all).",
)
@click.option(
    "--verify-samples",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Samples on which TFLite Micro, LiteRT's reference kernels and the integer-only model must match "
    "edgeq's integer reference.",
)
def convert(
    model: str,
    target: str,
    outdir: str,
    eval_data: str | None,
    ort_format: bool,
    io: str,
    precision: str,
    report_html: str | None,
    integer_only: bool,
    verify_samples: int,
    **opts,
) -> None:
    """Quantize MODEL for target runtimes, validate each artifact by running it, and write report.json."""
    from edgeq.api.convert import TARGETS, convert
    from edgeq.data.sources import load_arrays
    from edgeq.io.onnx_model import load_model

    out = prepare_output_dir(outdir, model)
    if report_html:
        check_output_path(report_html, model)
    targets = TARGETS if target == "all" else (target,)
    recipe = _recipe_from(opts)
    if opts["activation_type"] is None and opts["recipe"] is None:
        recipe = recipe.updated(activation_type="auto")
    float_model = load_model(model)
    data = _open_data(
        opts["calib"],
        float_model,
        opts["image_spec"],
        recipe.max_calib_samples,
        progress=not opts["no_progress"],
    )
    eval_source = _open_data(eval_data, load_model(model), opts["image_spec"], None) if eval_data else data
    labels = load_arrays(eval_data).get("label") if eval_data and eval_data.endswith(".npz") else None
    report = convert(
        float_model,
        model,
        data,
        eval_source,
        recipe,
        out,
        targets=targets,
        labels=labels,
        ort_format=ort_format,
        io=io,
        float_tflite=precision == "float",
        integer_only=integer_only,
        verify_samples=verify_samples,
        progress=not opts["no_progress"],
    )
    _emit_json(report, str(out / "report.json"))
    for name, result in report["targets"].items():
        click.echo(f"{name}: wrote {', '.join(result['artifacts'])}")
        click.echo(f"  {_target_summary(name, result)}")
    if report_html:
        from edgeq.reports.html import write_report

        shown = [a for a in dict.fromkeys(report["artifacts"]) if a.endswith((".onnx", ".tflite")) and ".float." not in a]
        write_report(report_html, _report_page(model, shown, eval_source, runs=20, saved=report))
        click.echo(f"report: wrote {report_html}")


def _target_summary(name: str, result: dict) -> str:
    if name == "tflm":
        exact = (result["validation"].get("bit_exact") or {}).get("tflite_micro")
        line = f"flash {result['flash_bytes']} B, arena {result['arena_bytes']} B"
        if isinstance(exact, dict):
            line += f"; TFLite Micro vs integer reference: {exact['mismatches']} mismatching elements"
        return line
    validation = result["validation"]
    parts = [f"{out}: SQNR {row['sqnr_db']:.1f} dB" for out, row in validation["outputs"].items()]
    if "accuracy" in validation:
        acc = validation["accuracy"]
        parts.append(f"accuracy float {acc['float']:.4f}, quantized {acc['quantized']:.4f}")
    if name == "onnxruntime":
        return f"{result['activation_type']} activations; " + "; ".join(parts)
    if name == "onnxruntime-integer":
        exact = validation.get("bit_exact")
        if exact:
            parts.append(
                f"against the integer reference on {exact['samples']} samples: "
                + ("bit-exact" if exact["bit_exact"] else "MISMATCHES (see report.json)")
            )
        return f"{result['nodes']} integer-only nodes; " + "; ".join(parts)
    inputs = ", ".join(f"{i['name']} {i['dtype']} {i['shape']} {i['layout']}" for i in result["inputs"])
    line = f"input {inputs}; " + "; ".join(parts)
    exact = validation.get("bit_exact")
    if exact:
        runs = [k for k in ("tflite_micro", "litert_reference") if isinstance(exact.get(k), dict)]
        line += f"; against the integer reference on {exact['samples']} samples: " + ", ".join(
            f"{k} {exact[k]['mismatches']} mismatching elements" for k in runs
        )
    return line


@main.command()
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--runs", type=click.IntRange(1), default=100, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True)
@click.option(
    "--threads", default="1", show_default=True, help="Thread counts, one latency row each: 2, 1,2,4 or 1-4."
)
@click.option(
    "--compare",
    "other",
    type=click.Path(dir_okay=False),
    default=None,
    help="Measure ARTIFACT and OTHER (.onnx/.ort/.tflite) alternately and print their latency ratio instead.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def profile(
    artifact: str, runs: int, warmup: int, threads: str, other: str | None, no_progress: bool, as_json: bool
) -> None:
    """Measure latency (p50/p90/p99, spread) per thread count, per-op time and size of an .onnx, .ort or
    .tflite artifact, with its static analysis (parameters, MACs and activation memory per layer, the liveness
    peak).

    An .onnx/.ort runs in onnxruntime; its per-op breakdown comes from onnxruntime's profiler, with the share
    of a run it accounts for (flagged under 90%), and the report says which nodes run as integer kernels. A
    .tflite runs in LiteRT with default kernels (XNNPACK), without default delegates and with reference
    kernels; with the tflm extra installed, its TFLite Micro arena and flash size are measured too, and its
    latency on Cortex-M4F/M7/M55 is estimated from documented device profiles (targets/tflm/mcu.py).

    With --compare OTHER, the two artifacts run alternately in one process (rounds of a few runs of each; a
    .tflite with LiteRT's default kernels), and the result is the median over rounds of the latency ratio
    ARTIFACT/OTHER, per thread count.
    """
    counts = _thread_counts(threads)
    if other is not None:
        from edgeq.measure.latency import alternate, format_alternation

        a, b = Path(artifact), Path(other)
        target_a, target_b = _profile_target(a), _profile_target(b)
        result = alternate(
            artifact, lambda count: target_a.runner(a, count), other, lambda count: target_b.runner(b, count),
            threads=counts, runs=runs, warmup=warmup, progress=not no_progress,
        )  # fmt: skip
        if as_json:
            _emit_json(result, None)
        else:
            click.echo(format_alternation(result))
        return
    progress = not no_progress
    result, target = _profile(Path(artifact), runs=runs, warmup=warmup, threads=counts, progress=progress)
    if as_json:
        _emit_json(result, None)
        return
    from edgeq.reports.analysis import format_analysis

    click.echo(target.format_profile(result))
    if "analysis" in result:
        click.echo(format_analysis(result["analysis"]))
    for device, row in result.get("mcu_estimate", {}).items():
        click.echo(f"estimate on {device}: {row['latency_ms']:.1f} ms ({row['note']})")


def _thread_counts(spec: str) -> list[int]:
    """The counts in '2', '1,2,4', '1-4' or a mix ('1-2,4'), each once, in the order given; at most four
    threads per core of this machine (more measures the scheduler, not the model)."""
    limit = 4 * (os.cpu_count() or 1)
    counts: list[int] = []
    for part in spec.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            counts += range(int(low), int(high) + 1) if dash else [int(low)]
        except ValueError:
            raise EdgeqError(f"--threads {spec!r}: give thread counts as 2, 1,2,4 or 1-4") from None
        if dash and int(high) < int(low):
            raise EdgeqError(f"--threads {spec!r}: the range {part.strip()} is empty")
    if min(counts) < 1 or max(counts) > limit:
        raise EdgeqError(f"--threads {spec!r}: thread counts must be between 1 and {limit} on this machine")
    return list(dict.fromkeys(counts))


def _profile_target(path: Path):
    """The target module that runs PATH, after the checks that turn a bad file into a one-line error."""
    from edgeq.io.onnx_model import read_proto

    if path.suffix not in (".onnx", ".ort", ".tflite"):
        raise EdgeqError(f"{path}: edgeq profile reads .onnx, .ort and .tflite files")
    if not path.is_file():
        raise EdgeqError(f"model file {path} does not exist")
    if path.suffix == ".tflite":
        from edgeq.targets.tflite import artifact

        return artifact
    if path.suffix == ".onnx":
        read_proto(path)  # clear errors for a truncated or unsafe model before onnxruntime sees it
    from edgeq.targets.onnxruntime import artifact as onnxruntime

    return onnxruntime


def _profile(path: Path, *, runs: int, warmup: int, threads: int | list[int], progress: bool = True):
    """(profile result with "analysis" and, for a .tflite, "mcu_estimate"; the target module that made it)."""
    target = _profile_target(path)
    result = target.profile(path, runs=runs, warmup=warmup, threads=threads, progress=progress)
    if path.suffix != ".ort":  # onnxruntime has no public reader for .ort files
        from edgeq.reports.analysis import analyze

        result["analysis"] = analyze(path)
    if path.suffix == ".tflite":
        from edgeq.targets.tflm.mcu import PROFILES, estimate

        result["mcu_estimate"] = {name: estimate(result["analysis"], device) for name, device in PROFILES.items()}
    return result, target


@main.command()
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("quantized", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_source", required=True, help="Inputs: .npz, image folder or module:function.")
@click.option("--image-spec", default=None)
@click.option("--max-samples", type=click.IntRange(1), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a PNG: per-layer SQNR (layers in graph order) with one line per quantized model.",
)
def compare(
    float_model: str,
    quantized: tuple[str, ...],
    data_source: str,
    image_spec: str | None,
    max_samples: int | None,
    as_json: bool,
    plot_path: str | None,
) -> None:
    """Per-output and per-layer SQNR of each QUANTIZED model (.onnx or .tflite) against FLOAT_MODEL.

    Give several quantized models (e.g. one per recipe) to see what each pass changes, layer by layer.
    """
    from edgeq.io.onnx_model import load_model
    from edgeq.reports.compare import compare, layer_order, plot_layers

    if plot_path:
        check_output_path(plot_path, float_model, *quantized)
    data = _open_data(data_source, load_model(float_model), image_spec, max_samples)
    results = {path: compare(float_model, path, data) for path in quantized}
    if plot_path:
        plot_layers(results, plot_path)
    if as_json:
        _emit_json(results if len(quantized) > 1 else results[quantized[0]], None)
        return
    first = results[quantized[0]]
    rows = {"outputs": list(first["outputs"]), "layers": layer_order(results)}
    names = [*rows["outputs"], *rows["layers"]]
    width = min(72, max(len("tensor"), *(len(n) for n in names)))

    def shorten(name: str) -> str:  # keep the end of long names: it says which layer
        return name if len(name) <= width else "..." + name[-(width - 3) :]

    if len(quantized) == 1:
        click.echo(f"{'tensor':<{width}} {'SQNR dB':>9} {'max abs err':>12}")
        for section in ("outputs", "layers"):
            click.echo(f"-- {section}")
            for name, row in first[section].items():
                click.echo(f"{shorten(name):<{width}} {row['sqnr_db']:>9.2f} {row['max_abs_error']:>12.4g}")
        return
    labels = [Path(p).name for p in quantized]
    click.echo(f"{'SQNR dB':<{width}} " + " ".join(f"{label[-18:]:>18}" for label in labels))
    for section in ("outputs", "layers"):
        click.echo(f"-- {section}")
        for name in rows[section]:
            cells = [results[p][section].get(name, {}).get("sqnr_db") for p in quantized]
            text = " ".join(f"{c:>18.2f}" if c is not None else f"{'-':>18}" for c in cells)
            click.echo(f"{shorten(name):<{width}} {text}")


@main.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_source", required=True, help="Float inputs: .npz, image folder or module:function.")
@click.option("--image-spec", default=None)
@click.option("--samples", type=click.IntRange(1), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(artifacts: tuple[str, ...], data_source: str, image_spec: str | None, samples: int, as_json: bool):
    """Run ARTIFACTS (.tflite, <name>.integer.onnx, the QDQ .onnx) and edgeq's integer reference on the same
    int8 inputs; report mismatching elements per runtime and output. Exits 1 unless every exact runtime (integer
    reference, integer-only ONNX, LiteRT reference kernels, TFLite Micro) agrees and the float-scale ones (the QDQ
    model in onnxruntime, LiteRT's optimized kernels) stay within 1 LSB of the reference kernel at every op.
    """
    from edgeq.data.sources import open_data, parse_image_spec
    from edgeq.reports.verify import check_artifacts, data_specs, format_verification, reference_graph, verify

    paths = check_artifacts(artifacts)
    reference = reference_graph(paths)
    spec = parse_image_spec(image_spec) if image_spec else None
    data = open_data(data_source, data_specs(reference[0]), image_spec=spec, max_samples=samples)
    report = verify(paths, data, samples=samples, reference=reference)
    if as_json:
        _emit_json(report, None)
    else:
        click.echo(format_verification(report))
    if not (report["bit_exact"] and report["within_1_lsb_per_op"]):
        sys.exit(1)


@main.command()
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_source", required=True, help="Inputs to compare on: .npz, image folder or module:function.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--image-spec", default=None)
@click.option("--max-samples", type=click.IntRange(1), default=None)
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True, help="Latency runs per artifact.")
@click.option(
    "--quantize-report",
    type=click.Path(dir_okay=False),
    default=None,
    help="report.json of `edgeq convert` or --report of `edgeq quantize`: adds the recipe, passes and warnings.",
)
def report(
    float_model: str,
    artifacts: tuple[str, ...],
    data_source: str,
    output: str,
    image_spec: str | None,
    max_samples: int | None,
    runs: int,
    quantize_report: str | None,
) -> None:
    """One self-contained HTML page on ARTIFACTS (.onnx/.tflite) of FLOAT_MODEL: per-layer SQNR against float,
    latency per op type, MACs and activation memory per layer, sizes, recipe and warnings."""
    from edgeq.io.onnx_model import load_model
    from edgeq.reports.html import write_report

    check_output_path(output, float_model, *artifacts, quantize_report)
    data = _open_data(data_source, load_model(float_model), image_spec, max_samples)
    saved = _load_report(quantize_report) if quantize_report else None
    write_report(output, _report_page(float_model, list(artifacts), data, runs=runs, saved=saved))
    click.echo(f"wrote {output}")


def _report_page(float_model: str, artifacts: list[str], data, *, runs: int, saved: dict | None) -> dict:
    """The HTML report's data: compare, profile and analyse each artifact; recipe and passes from SAVED (a quantize
    --report or convert report.json)."""
    from edgeq.reports.compare import compare

    page: dict = {"title": f"edgeq report: {Path(float_model).name}"}
    page["compare"] = {path: compare(float_model, path, data) for path in artifacts}
    page["profiles"] = [_profile(Path(p), runs=runs, warmup=5, threads=1, progress=False)[0] for p in artifacts]
    page["analysis"] = page["profiles"][0].get("analysis")
    page["artifacts"] = {path: Path(path).stat().st_size for path in artifacts}
    if saved is not None:
        targets = saved.get("targets") or {}
        quantize = next((t for t in targets.values() if isinstance(t, dict) and "stages" in t), saved)
        page["recipe"] = saved.get("recipe")
        page["quantize"] = quantize if "stages" in quantize else None
    return {k: v for k, v in page.items() if v is not None}


def _load_report(path: str) -> dict:
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeqError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgeqError(f"{path} is not a JSON report: {exc}") from None
    if not isinstance(saved, dict):
        raise EdgeqError(f"{path} is not an edgeq report")
    return saved


if __name__ == "__main__":
    main()
