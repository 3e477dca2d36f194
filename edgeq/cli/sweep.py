"""``edgeq sweep``: many models x many recipes, each pair one convert task on Ray, into one comparison table."""

from __future__ import annotations

import sys

import click

from edgeq.cli import main

EXIT_SOME_FAILED = 1


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--recipe",
    "recipes",
    multiple=True,
    help="A TOML recipe file, or recipe options key=value[,key=value...] (TOML values); repeat for several. "
    "Default: one run with the default recipe.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    default=["onnxruntime"],
    show_default=True,
    help="Target to convert for (edgeq convert --target); repeat for several.",
)
@click.option("--calib", default=None, help="Calibration data for MODEL files (a model folder has its calib.npz).")
@click.option("--eval-data", default=None, help="Evaluation data for MODEL files (a model folder: its eval.npz).")
@click.option("-o", "--outdir", required=True, help="Folder for each pair's artifacts, the table and the plot.")
@click.option(
    "--verify-samples",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Samples the integer artifacts are checked on against edgeq's integer reference (edgeq convert).",
)
@click.option(
    "--ray-address",
    default=None,
    help="host:port or auto: run on that Ray cluster (every node sees the same paths); serial: no Ray. "
    "Default: a Ray instance on this machine (serially without Ray installed).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def sweep(models, recipes, targets, calib, eval_data, outdir, verify_samples, ray_address, no_progress) -> None:
    """Convert every MODEL (an .onnx file, or a folder with model.onnx, calib.npz and eval.npz) with every
    recipe, one Ray task per pair, and write one table (sweep.md/.csv/.json) and plot (sweep.png) into OUTDIR.
    A pair that fails is a row with its error; the exit status is then 1."""
    from edgeq.api.sweep import format_table
    from edgeq.api.sweep import sweep as sweep_models

    result = sweep_models(
        models, recipes, outdir=outdir, targets=targets, calib=calib, eval_data=eval_data,
        verify_samples=verify_samples, address=ray_address, progress=not no_progress,
    )  # fmt: skip
    click.echo(format_table(result.rows))
    click.echo(f"wrote {', '.join(str(p) for p in [*result.tables, result.plot])}")
    if result.failed:
        click.echo(f"{len(result.failed)} of {len(result.rows)} row(s) failed", err=True)
        sys.exit(EXIT_SOME_FAILED)
