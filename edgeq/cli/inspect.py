"""``edgeq verify``, ``edgeq compare``, ``edgeq profile`` and ``edgeq report``: the commands that measure artifacts."""

from __future__ import annotations

import sys

import click

from edgeq.cli import echo_json, main
from edgeq.errors import RecipeError


def parse_threads(spec: str) -> list[int]:
    """The counts in '2', '1,2,4', '1-4' or a mix ('1-2,4'), in the order given (edgeq.measure.latency checks
    them)."""
    from edgeq.measure.latency import thread_counts

    counts: list[int] = []
    for part in spec.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise RecipeError(f"--threads {spec!r}: give thread counts as 2, 1,2,4 or 1-4") from None
        if last < first:
            raise RecipeError(f"--threads {spec!r}: the range {part.strip()} is empty")
        try:
            thread_counts([first, last])  # before expanding: '1-100000' must not become a list of 100000
        except RecipeError as exc:
            raise RecipeError(f"--threads {spec!r}: {exc}") from None
        counts += range(first, last + 1)
    return counts


IMAGE_SPEC_HELP = "Preprocessing for an image folder (see `edgeq quantize --help`), e.g. 'resize=256,crop=224'."
MAX_SAMPLES_HELP = "Use at most this many samples of --data.  [default: all]"


@main.command()
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--runs", type=click.IntRange(1), default=100, show_default=True, help="Timed runs per thread count.")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True, help="Untimed runs first.")
@click.option(
    "--threads",
    default="1",
    show_default=True,
    callback=lambda ctx, param, spec: parse_threads(spec),  # at parse time, before the artifact is read
    help="Thread counts (1 to 4x the CPUs), one latency row each: 2, 1,2,4 or 1-4.",
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
def profile(artifact: str, runs: int, warmup: int, threads: list[int], other, no_progress: bool, as_json: bool) -> None:
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
    from edgeq.api.inspect import profile as profile_artifact

    result = profile_artifact(
        artifact, runs=runs, warmup=warmup, threads=threads, against=other, progress=not no_progress
    )
    if as_json:
        echo_json(result.report)
    else:
        click.echo(result.text)


@main.command()
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("quantized", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_source", required=True, help="Inputs: .npz, image folder or module:function.")
@click.option("--image-spec", default=None, help=IMAGE_SPEC_HELP)
@click.option("--max-samples", type=click.IntRange(1), default=None, help=MAX_SAMPLES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a PNG: per-layer SQNR (layers in graph order) with one line per quantized model.",
)
def compare(float_model: str, quantized, data_source: str, image_spec, max_samples, as_json: bool, plot_path) -> None:
    """Per-output and per-layer SQNR of each QUANTIZED model (.onnx or .tflite) against FLOAT_MODEL.

    Give several quantized models (e.g. one per recipe) to see what each pass changes, layer by layer.
    """
    from edgeq.api.inputs import data_of, refuse_unused_image_spec
    from edgeq.io.files import check_output_path
    from edgeq.io.onnx_model import load_model
    from edgeq.reports.compare import compare as compare_artifact
    from edgeq.reports.compare import format_comparison, plot_layers

    if plot_path:
        check_output_path(plot_path, float_model, data_source, *quantized)
    refuse_unused_image_spec(image_spec, data_source)
    data = data_of(data_source, load_model(float_model), image_spec=image_spec, max_samples=max_samples)
    results = {path: compare_artifact(float_model, path, data) for path in quantized}
    if plot_path:
        plot_layers(results, plot_path)
    if as_json:
        echo_json(results if len(quantized) > 1 else results[quantized[0]])
    else:
        click.echo(format_comparison(results))


@main.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_source", required=True, help="Float inputs: .npz, image folder or module:function.")
@click.option("--image-spec", default=None, help=IMAGE_SPEC_HELP)
@click.option(
    "--samples", type=click.IntRange(1), default=16, show_default=True, help="Samples of --data to run and compare."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(artifacts, data_source: str, image_spec, samples: int, as_json: bool):
    """Run ARTIFACTS (.tflite, <name>.integer.onnx, the QDQ .onnx) and edgeq's integer reference on the same
    int8 inputs; report mismatching elements per runtime and output. Exits 1 unless every exact runtime (integer
    reference, integer-only ONNX, LiteRT reference kernels, TFLite Micro) agrees and the float-scale ones (the QDQ
    model in onnxruntime, LiteRT's optimized kernels) stay within 1 LSB of the reference kernel at every op.
    """
    from edgeq.api.inspect import verify as verify_artifacts
    from edgeq.reports.verify import format_verification

    result = verify_artifacts(list(artifacts), data_source, samples=samples, image_spec=image_spec)
    if as_json:
        echo_json(result.report)
    else:
        click.echo(format_verification(result.report))
    if not result.passed:
        sys.exit(1)


@main.command()
@click.argument("float_model", type=click.Path(dir_okay=False))
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", "data_source", required=True, help="Inputs to compare on: .npz, image folder or module:function.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--image-spec", default=None, help=IMAGE_SPEC_HELP)
@click.option("--max-samples", type=click.IntRange(1), default=None, help=MAX_SAMPLES_HELP)
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True, help="Latency runs per artifact.")
@click.option(
    "--quantize-report",
    type=click.Path(dir_okay=False),
    default=None,
    help="report.json of `edgeq convert` or --report of `edgeq quantize`: adds the recipe, stages and warnings.",
)
def report(float_model: str, artifacts, data_source: str, output: str, image_spec, max_samples, runs: int, quantize_report):
    """One self-contained HTML page on ARTIFACTS (.onnx/.tflite) of FLOAT_MODEL: per-layer SQNR against float,
    latency per op type, MACs and activation memory per layer, sizes, recipe and warnings."""
    from edgeq.api.inspect import report as write_report

    write_report(
        float_model, list(artifacts), data_source, output, quantize_report=quantize_report, runs=runs,
        image_spec=image_spec, max_samples=max_samples,
    )  # fmt: skip
    click.echo(f"wrote {output}")
