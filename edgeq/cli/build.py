"""``edgeq export``, ``edgeq quantize`` and ``edgeq convert``: the commands that make models and artifacts."""

from __future__ import annotations

import click

from edgeq.cli import main
from edgeq.cli.mixed_lines import echo_mixed
from edgeq.errors import EdgeqError, RecipeError
from edgeq.quantization.cpus import CPU_CHOICES
from edgeq.quantization.recipe import (
    ACTIVATION_CHOICES,
    BIAS_CORRECTIONS,
    CALIB_METHODS,
    EQUALIZE_CLIPS,
    EQUALIZE_SCALINGS,
    MODES,
    WEIGHT_RANGES,
    WEIGHT_ROUNDINGS,
    Recipe,
    parse_input_shape,
    parse_layer,
)

# The recipe options as flags: each (flag, click options); the flag's name is the recipe field's.
RECIPE_FLAGS = [
    (
        "--activation-type",
        {
            "type": click.Choice(list(ACTIVATION_CHOICES)),
            "help": "Activation type; auto: what ORT fuses, TFLite int8 (transformers: int16 by error).",
        },
    ),
    (
        "--weight-bits",
        {
            "type": click.Choice(["8", "4"]),
            "help": "Weight bits (4-bit: INT4 in the ONNX Runtime model, int8 containers in TFLite).",
        },
    ),
    ("--per-tensor", {"is_flag": True, "help": "Per-tensor weights (default per channel)."}),
    (
        "--weight-range",
        {
            "type": click.Choice(list(WEIGHT_RANGES)),
            "help": "How weight scales are chosen (mse searches a clipping threshold per channel).",
        },
    ),
    (
        "--weight-rounding",
        {
            "type": click.Choice(list(WEIGHT_ROUNDINGS)),
            "help": "Round weights to nearest, or keep each output channel's integer sum (default).",
        },
    ),
    (
        "--calib-method",
        {
            "type": click.Choice(list(CALIB_METHODS)),
            "help": "How activation ranges are chosen (auto: percentile, minmax for int16).",
        },
    ),
    (
        "--percentile",
        {
            "type": click.FloatRange(50, 100, min_open=True),
            "help": "Percentile for --calib-method percentile (or auto).",
        },
    ),
    (
        "--passes",
        {
            "callback": lambda ctx, param, text: _checked(param, text, _pass_names),
            "help": "Optional passes, comma-separated: equalize,smooth-quant,range-search,adaround,bias-correction "
            "(they run in pipeline order; this list replaces the recipe's).",
        },
    ),
    (
        "--bias-correction",
        {
            "type": click.Choice(list(BIAS_CORRECTIONS)),
            "help": "Add bias correction: measured on the calibration data, or from BatchNorm statistics "
            "(data-free).",
        },
    ),
    (
        "--equalize-clip",
        {
            "type": click.Choice(list(EQUALIZE_CLIPS)),
            "help": "Relu6 between equalized layers: exact (a per-channel Min, the default), to-relu (changes "
            "the float model), keep (not equalized). See passes/equalize.py.",
        },
    ),
    (
        "--equalize-scaling",
        {
            "type": click.Choice(list(EQUALIZE_SCALINGS)),
            "help": "Equalization scales from weight ranges (the paper; for per-tensor weights) or from "
            "activation ranges on the calibration data (for per-channel weights); auto (the default) picks by "
            "--per-tensor.",
        },
    ),
    (
        "--dyadic-bits",
        {
            "type": click.IntRange(1, 31),
            "help": "Significand width of every requantization multiplier (31, TFLite's, changes nothing; 16 "
            "or 8 for integer accelerators). See passes/dyadic.py.",
        },
    ),
    ("--pow2", {"is_flag": True, "help": "Power-of-two scales: every requantization is a shift."}),
    (
        "--exclude",
        {
            "multiple": True,
            "callback": lambda ctx, param, names: _checked(param, names, _not_empty),
            "help": "Keep nodes float: a node name, an op type or a regex; repeat for several.",
        },
    ),
    (
        "--layer",
        {
            "multiple": True,
            "callback": lambda ctx, param, texts: _checked(param, texts, parse_layer),
            "help": "Per-layer precision PATTERN=float|int8|int4|int16, PATTERN as for --exclude (node names as "
            "edgeq inspect lists them): int8/int4 give that node's weights 8/4 bits whatever --weight-bits says, "
            "float keeps it float, int16 makes it compute with int16 activations and int8 weights (16x8) in an "
            "8-bit model (its inputs and output int16, a requantization where it meets 8-bit nodes). Repeat for "
            "several; the first matching one wins; replaces the recipe's layers table.",
        },
    ),
    (
        "--max-calib-samples",
        {"type": click.IntRange(1), "help": "Calibrate on at most this many samples of --calib."},
    ),
    (
        "--cpu",
        {
            "type": click.Choice(list(CPU_CHOICES)),
            "help": "The CPU the ONNX Runtime artifact will run on (default auto: this machine). x86-avx2 (no "
            "VNNI) gets 7-bit weights in the layers ONNX Runtime runs as u8s8 GEMMs, so its fast kernels are "
            "exact there. See docs/runtimes.md §5.6.",
        },
    ),
    (
        "--mode",
        {
            "type": click.Choice(list(MODES)),
            "help": "static: calibrated activations and int8 weights, for every target. dynamic: int8 weights of "
            "MatMul/Gemm and embedding tables, activations quantized per run by ONNX Runtime's "
            "DynamicQuantizeMatMul (onnxruntime target only; for transformers). auto: static, except that "
            "convert's onnxruntime target builds a transformer both ways and keeps the smaller output error.",
        },
    ),
    (
        "--input-shape",
        {
            "multiple": True,
            "callback": lambda ctx, param, texts: _checked(param, texts, parse_input_shape),
            "help": "Fix an input's dynamic dimensions: NAME=1,3,320,320 (or 1,3,320,320 for a one-input model); "
            "repeat per input. Default: from the calibration data, the batch axis 1 only if the graph reads it.",
        },
    ),
]


def quant_options(f):
    """The options every calibrating command takes: data, recipe, the recipe's fields, progress."""
    options = [
        click.option(
            "--calib",
            required=True,
            help="Calibration data: an .npz (keys = input names), an image folder, module:function, or "
            "'synthetic' (distilled from the model's BatchNorm statistics).",
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
        *(click.option(flag, default=None, show_default=_default_text(flag), **extra) for flag, extra in RECIPE_FLAGS),
        click.option(
            "--replace-nonfinite",
            is_flag=True,
            help="Replace NaN weights by 0 and infinite ones by their tensor's largest finite magnitude, and list "
            "them (report and stderr), instead of refusing the model.",
        ),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# The mixed-precision search (edgeq.api.mixed), on quantize and convert: each flag's name is the API keyword's.
MIXED_FLAGS = [
    (
        "--budget",
        {"help": "size=1.2MB, arena=96KB or both (size=1.2MB,arena=96KB; B, KB, MB, KiB, MiB): choose each "
         "weighted layer's precision (float, int8, int4, as the targets allow) so that the artifact fits and, with "
         "an arena (TFLite Micro's, targets tflm/tflite), the activation tensors made int16 within that arena, by an "
         "integer program over the measured sensitivity (docs/mixed-precision.md)."},
    ),
    (
        "--max-drop",
        {"type": float, "help": "Revert the most sensitive layers (int4 -> int8 -> float) one at a time until "
         "--metric drops at most this much against the float model (points of %, dB for sqnr)."},
    ),
    (
        "--metric",
        {"help": "What --max-drop measures on --eval-data: agreement (default), top1, auc (labels: the .npz's "
         "'label' key), sqnr, or module:function(reference_outputs, outputs, labels) -> float."},
    ),
    ("--ray-address", {"help": "Run the per-layer measurements on this Ray cluster (default: a local Ray "
                       "instance when Ray is installed; 'serial': none)."}),
]  # fmt: skip


def mixed_options(f):
    for flag, extra in reversed(MIXED_FLAGS):
        f = click.option(flag, default=None, **extra)(f)
    return f


def mixed_given(opts: dict) -> dict:
    """The mixed-precision flags' values, popped from OPTS."""
    return {flag[2:].replace("-", "_"): opts.pop(flag[2:].replace("-", "_")) for flag, _ in MIXED_FLAGS}


# What a recipe flag left out means, where the Recipe field's default does not say it.
_DEFAULT_TEXTS = {
    "activation_type": "int8; convert: auto",
    "per_tensor": "per channel",
    "passes": "none",
    "exclude": "none",
    "layer": "none",
    "max_calib_samples": "all",
    "input_shape": "from the calibration data",
    "pow2": "off",
}


def _default_text(flag: str) -> str:
    """The default a recipe flag shows in --help: the Recipe field's, unless --recipe gives one."""
    name = flag[2:].replace("-", "_")
    return f"{_DEFAULT_TEXTS.get(name, getattr(Recipe(), name, None))}, or the --recipe file's"


def _checked(param: click.Parameter, value, check):
    """VALUE (a flag's text, or each of a repeated flag's) passed through CHECK at parse time, before any file is
    read: a bad one is the one-line error, naming the flag."""
    for text in () if value is None else value if isinstance(value, tuple) else [value]:
        try:
            check(text)
        except EdgeqError as exc:
            flag, message = param.opts[0], str(exc)
            raise RecipeError(message if message.startswith(flag) else f"{flag}: {message}") from None
    return value


def _not_empty(name: str) -> None:
    if not name.strip():
        raise RecipeError("an empty name would match every unnamed node")


def _pass_names(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    Recipe(passes=names).validate()
    return names


def recipe_options(opts: dict) -> dict:
    """The recipe fields the flags in OPTS give (None: not given), popped from OPTS."""
    given = {flag[2:].replace("-", "_"): opts.pop(flag[2:].replace("-", "_")) for flag, _ in RECIPE_FLAGS}
    per_tensor = given.pop("per_tensor")
    given["per_channel"] = False if per_tensor else None
    given["weight_bits"] = int(given["weight_bits"]) if given["weight_bits"] else None
    if given["passes"] is not None:
        given["passes"] = _pass_names(given["passes"])
    given["exclude"] = list(given["exclude"]) or None
    layers: dict[str, str] = {}
    for pattern, precision in map(parse_layer, given.pop("layer")):
        if pattern in layers:  # the first match wins: a second precision for it would be silently ignored
            raise RecipeError(f"--layer {pattern!r} is given twice")
        layers[pattern] = precision
    given["layers"] = layers or None
    given["input_shapes"] = dict(parse_input_shape(text) for text in given.pop("input_shape")) or None
    if given["percentile"] is not None and given["calib_method"] not in (None, "percentile", "auto"):
        raise RecipeError(
            f"--percentile is used only by --calib-method percentile or auto, not {given['calib_method']}"
        )
    return given


def _supported_opset(param: click.Parameter, opset: int) -> int:
    from edgeq.io.onnx_model import MAX_OPSET, MIN_OPSET

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise click.BadParameter(f"{opset} is not in {MIN_OPSET}..{MAX_OPSET}, the opsets edgeq reads", param=param)
    return opset


@main.command()
@click.argument("factory")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The ONNX file to write.")
@click.option("--input-shape", default=None, help="Example input shape, e.g. 1,3,224,224 (if the factory gives none).")
@click.option(
    "--opset",
    type=int,
    default=17,
    show_default=True,
    callback=lambda ctx, param, opset: _supported_opset(param, opset),
    help="ONNX opset of the exported model: one edgeq reads (edgeq.io.onnx_model).",
)
@click.option("--static-batch", is_flag=True, help="Keep the batch dimension fixed.")
def export(factory: str, output: str, input_shape: str | None, opset: int, static_batch: bool) -> None:
    """Export a PyTorch module (MODULE:FACTORY) to ONNX, checked against torch."""
    from edgeq.api.export import export_factory

    result = export_factory(factory, output, input_shape=input_shape, opset=opset, dynamic_batch=not static_batch)
    click.echo(f"wrote {output} ({result})")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The QDQ ONNX file to write.")
@quant_options
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write a JSON report.")
@click.option("--eval-data", default=None, help="Data --max-drop is measured on (default: the calibration data).")
@mixed_options
def quantize(model: str, output: str, report_path: str | None, **opts) -> None:
    """Calibrate MODEL and write its QDQ (QuantizeLinear/DequantizeLinear) model: 8-bit (or int16) activations."""
    from edgeq.api.quantize import quantize as quantize_model

    options = recipe_options(opts)
    result = quantize_model(
        model, opts["calib"], output=output, report=report_path, recipe=opts["recipe"],
        image_spec=opts["image_spec"], progress=not opts["no_progress"], eval_data=opts.pop("eval_data"),
        replace_nonfinite=opts["replace_nonfinite"], **mixed_given(opts), **options,
    )  # fmt: skip
    report = result.report
    echo_mixed(report)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report["quantized_nodes"].items()))
    click.echo(f"wrote {output}: quantized {counts}; {len(report['float_nodes'])} node(s) left float")
    _echo_fixed_shapes(report["stages"]["preprocess"].get("fixed_input_shapes", {}))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


def _echo_fixed_shapes(fixed: dict[str, dict]) -> None:
    for name, record in fixed.items():
        shape = ", ".join("?" if d is None else str(d) for d in record["shape"])
        click.echo(f"input {name}: shape fixed to [{shape}] from {record['from']}")


class _ConvertCommand(click.Command):
    """convert's parameters plus every target's own options (edgeq.targets), added when the command is used."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not getattr(self, "_with_targets", False):
            from edgeq import targets

            seen = {p.name for p in self.params}
            for target in targets.registered():
                for option in target.options:
                    if option.name in seen:
                        continue
                    seen.add(option.name)
                    flag = "--" + option.name.replace("_", "-")
                    if option.choices is None:
                        self.params.append(click.Option([flag], is_flag=True, help=option.help))
                    else:
                        kind = click.Choice(list(option.choices))
                        self.params.append(
                            click.Option([flag], type=kind, default=option.default, show_default=True, help=option.help)
                        )
            self._with_targets = True
        return super().get_params(ctx)


def _target_names(ctx, param, value: str) -> str:
    from edgeq import targets

    if value != "all":
        targets.get(value)  # one line naming the targets there are
    return value


class _TargetHelp(click.Option):
    """--target's help, listing the registered targets (edgeq.targets) when it is shown."""

    def get_help_record(self, ctx: click.Context):
        from edgeq import targets

        self.help = "; ".join(
            [f"{t.name}: {t.description}" for t in targets.registered()]
            + ["all: every target but " + ", ".join(t.name for t in targets.registered() if t.on_request)]
        )
        return super().get_help_record(ctx)


@main.command(cls=_ConvertCommand)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", cls=_TargetHelp, default="onnxruntime", show_default=True, callback=_target_names)
@click.option("-o", "--outdir", required=True, help="Folder for the artifacts.")
@quant_options
@click.option("--eval-data", default=None, help="Data to validate on (default: the calibration data).")
@mixed_options
@click.option(
    "--report-html",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write this self-contained HTML report on the artifacts (see `edgeq report`).",
)
@click.option(
    "--integer-only",
    is_flag=True,
    help="Also write <name>.integer.onnx (the onnxruntime-integer target): integer arithmetic only between the "
    "input Quantize and the output Dequantize, bit-exact with the integer reference (with --target onnxruntime "
    "or all).",
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
    model: str, target: str, outdir: str, eval_data, report_html, integer_only: bool, verify_samples: int, **opts
) -> None:
    """Quantize MODEL for target runtimes, validate each artifact by running it, and write report.json."""
    from edgeq import targets
    from edgeq.api.convert import convert as convert_model
    from edgeq.errors import RecipeError
    from edgeq.reports.verify import one_line

    names = [target]
    if integer_only:
        if target not in ("onnxruntime", "all"):
            raise RecipeError("--integer-only is an ONNX Runtime artifact: use it with --target onnxruntime or all")
        names.append("onnxruntime-integer")
    options = recipe_options(opts)
    options.update(mixed_given(opts))
    target_options = {k: v for k, v in opts.items() if k not in ("calib", "image_spec", "recipe", "no_progress")}
    result = convert_model(
        model, opts["calib"], outdir=outdir, targets=names, eval_data=eval_data, recipe=opts["recipe"],
        verify_samples=verify_samples, report_html=report_html, image_spec=opts["image_spec"],
        progress=not opts["no_progress"], **options, **target_options,
    )  # fmt: skip
    _echo_fixed_shapes(result.report.get("fixed_input_shapes", {}))
    if "nonfinite_replaced" in result.report:
        from edgeq.io.model_checks import replaced_text

        click.echo(f"warning: {replaced_text(result.report['nonfinite_replaced'])}", err=True)
    echo_mixed(result.report)
    for name, report in result.targets.items():
        click.echo(f"{name}: wrote {', '.join(report['artifacts'])}")
        click.echo(f"  {targets.get(name).summary(report)}")
        if "verification" in report:
            click.echo(f"  {one_line(report['verification'])}")
    if report_html:
        click.echo(f"report: wrote {report_html}")
    if result.replaced:
        click.echo(f"replaced (from an earlier run): {', '.join(map(str, result.replaced))}")
    if result.removed:
        click.echo(f"removed (an earlier run's, not written by this one): {', '.join(map(str, result.removed))}")
