"""``edgeq inspect``: what a model file is and what each target would do with its nodes (edgeq.api.model_summary)."""

from __future__ import annotations

import textwrap

import click

from edgeq.cli import echo_json, main

LISTED_NODES = 12  # per target, of the nodes it leaves float or refuses; --json lists every node
WIDTH = 110  # the op histogram wraps at this many characters


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--input-shape",
    multiple=True,
    help="NAME=1,3,320,320: fix an input's dynamic dimensions for the targets' node plans (convert fixes them "
    "from its calibration data).",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Show the nodes convert --exclude would keep float as excluded: a node name, an op type or a regex; "
    "repeat for several.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/schemas/inspect.schema.json).")
def inspect_model(model: str, input_shape: tuple[str, ...], exclude: tuple[str, ...], as_json: bool) -> None:
    """Describe MODEL (.onnx or .tflite) without data: inputs and outputs (dtype, shape, guessed layout), opsets
    and producer or TFLite schema version, op histogram, parameters, MACs, file size; for an .onnx, which nodes
    each target would quantize, keep float (or, with --exclude, exclude) or refuse, and why."""
    from edgeq.api.model_summary import describe
    from edgeq.quantization.recipe import parse_input_shape

    shapes = dict(parse_input_shape(text) for text in input_shape) or None
    summary = describe(model, input_shapes=shapes, exclude=list(exclude))
    if as_json:
        echo_json(summary)
    else:
        click.echo(format_summary(summary))


def _shape(shape) -> str:
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def _values(rows: list[dict]) -> list[str]:
    cells = [
        (row["name"], row["dtype"], _shape(row["shape"]), row["layout"], _quantization(row.get("quantization")))
        for row in rows
    ]
    widths = [max((len(c[i]) for c in cells), default=0) for i in range(4)]
    return [
        ("  " + "  ".join(cell.ljust(width) for cell, width in zip(c[:4], widths, strict=True)) + c[4]).rstrip()
        for c in cells
    ]


def _quantization(quantization: dict | None) -> str:
    return "" if quantization is None else f"  scale {quantization['scale']:.6g} zero point {quantization['zero_point']}"


def _counted(counts: dict) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())


def format_summary(summary: dict) -> str:
    """The summary as aligned text: the file's facts, then per target its counts and the nodes it does not
    quantize."""
    size = f"{summary['file_bytes']:,} B"
    if summary["format"] == "onnx":
        producer = " ".join(p for p in summary["producer"].values() if p) or "unknown producer"
        opsets = ", ".join(f"{domain} {version}" for domain, version in summary["opsets"].items())
        head = f"ONNX, {size}, {producer}, IR {summary['ir_version']}, opsets {opsets}"
    else:
        head = f"TFLite schema {summary['schema_version']}, {size}, description {summary['description']!r}"
    lines = [f"{summary['path']}: {head}", "inputs", *_values(summary["inputs"])]
    lines += ["outputs", *_values(summary["outputs"])]
    ops = f"ops      {summary['nodes']:,} nodes: {_counted(summary['ops'])}"
    lines += textwrap.wrap(ops, WIDTH, subsequent_indent=" " * 9, break_on_hyphens=False)
    lines.append(f"params   {summary['params']:,} ({summary['param_bytes']:,} B)")
    if summary["macs"] is None:
        lines.append(f"MACs     {summary['macs_note']}")
    else:
        by_op = f"; {_counted(summary['macs_by_op'])}" if summary["macs_by_op"] else ""
        lines.append(f"MACs     {summary['macs']:,} {summary['macs_note']}{by_op}")
    lines.append(f"runs in  {', '.join(summary['claimed_by'])}")
    plans = summary.get("targets")
    refusals = {plan.get("refusal") for plan in (plans or {}).values() if not plan["nodes"]}
    if plans and len(refusals) == 1 and not any(plan["nodes"] for plan in plans.values()):
        lines.append(f"targets  every target refuses it: {refusals.pop()}")
    elif plans:
        lines.append(
            f"targets  what convert would do with each of the {summary['preprocessed_nodes']:,} nodes of the "
            "preprocessed graph (decided without data)"
        )
        width = max(len(name) for name in plans)
        for name, plan in plans.items():
            line = f"  {name.ljust(width)}  {_counted(plan['counts']) or 'no nodes'}"
            if "refusal" in plan:
                line += f"; refused: {plan['refusal']}"
            lines.append(line)
        lines += _unquantized(plans)
    return "\n".join(lines)


def _unquantized(plans: dict) -> list[str]:
    """The nodes each target leaves float, excludes or refuses, with why (at most LISTED_NODES per target)."""
    lines = []
    for name, plan in plans.items():
        rows = [row for row in plan["nodes"] if row["outcome"] in ("float", "excluded", "refused")]
        if not rows:
            continue
        lines.append(f"{name}: not quantized")
        op_width = max(len(row["op"]) for row in rows)
        for row in rows[:LISTED_NODES]:
            reason = f": {row['reason']}" if row.get("reason") else ""
            lines.append(f"  {row['outcome']:<8}  {row['op']:<{op_width}}  {row['node']}{reason}")
        if len(rows) > LISTED_NODES:
            lines.append(f"  ... and {len(rows) - LISTED_NODES} more (--json lists every node)")
    return lines
