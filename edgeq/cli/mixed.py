"""``edgeq sensitivity``: the per-layer sensitivity table and its plots."""

from __future__ import annotations

import click

from edgeq.cli import main
from edgeq.cli.build import quant_options, recipe_options

RULE_TARGETS = ("onnxruntime", "tflite", "tflm")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", required=True, help="Folder for sensitivity.json and the plots.")
@quant_options
@click.option("--eval-data", default=None, help="Data to measure on (default: the calibration data).")
@click.option("--samples", type=click.IntRange(1), default=64, show_default=True, help="Samples measured.")
@click.option(
    "--target",
    "target",
    type=click.Choice(RULE_TARGETS),
    default="onnxruntime",
    show_default=True,
    help="The target whose precisions each layer may take (tflite, tflm: int8 and int4, no float layers).",
)
@click.option(
    "--pareto",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Also build and measure this many mixes under budgets between uniform int4 and the base build "
    "(pareto.png, the report's pareto).",
)
@click.option("--ray-address", default=None, help="The Ray cluster for the tasks (default: a local Ray instance; "
              "'serial': none).")  # fmt: skip
def sensitivity(model: str, outdir: str, eval_data, samples: int, target: str, pareto: int, ray_address, **opts):
    """Per-layer sensitivity of MODEL: output SQNR with only one layer at float, int8 or int4, and HAWQ-V2's
    Hessian-trace Omega; writes sensitivity.json and sensitivity.png into OUTDIR."""
    from edgeq.api.mixed import sensitivity as measure

    options = recipe_options(opts)
    result = measure(
        model, opts["calib"], outdir=outdir, eval_data=eval_data, recipe=opts["recipe"], targets=[target],
        samples=samples, pareto=pareto, ray_address=ray_address, image_spec=opts["image_spec"],
        progress=not opts["no_progress"], **options,
    )  # fmt: skip
    report = result.report
    click.echo(
        f"{len(report['layers'])} layers, base {report['base_precision']} at {report['base_sqnr_db']} dB on "
        f"{report['samples']} samples; Spearman(Omega, int4 SQNR loss) {report['spearman_omega_vs_sqnr_loss']}"
    )
    worst = sorted(report["layers"], key=lambda row: _finite(row["sqnr_db"].get("int4")))[:5]
    for row in worst:
        click.echo(f"  {row['layer']} ({row['op']}, {row['params']} weights): {row['sqnr_db']}")
    click.echo(f"wrote {', '.join(str(p) for p in result.paths)}")


def _finite(value) -> float:
    return value if isinstance(value, int | float) else float("inf")
