"""What quantize and convert print about a mixed-precision choice (the report's ``mixed_precision``)."""

from __future__ import annotations

import click


def echo_mixed(report: dict) -> None:
    """One line per mixed-precision decision in REPORT (quantize's or convert's), if it has one."""
    mixed = report.get("mixed_precision")
    if mixed is None:
        return
    if "budget" in mixed:
        chosen = mixed["budget"]
        counts = ", ".join(f"{n} {p}" for p, n in chosen["precisions"].items() if n) + " layer(s)"
        budget = [f"size={chosen['budget_bytes']} bytes"] if chosen["budget_bytes"] else []
        arena = ""
        if "arena_budget_bytes" in chosen:
            counts += f" and {len(chosen['int16_tensors'])} int16 tensor(s)"
            budget.append(f"arena={chosen['arena_budget_bytes']} bytes")
            arena = f", TFLite Micro arena {chosen['arena_bytes']} bytes (predicted {chosen['predicted_arena_bytes']})"
        click.echo(
            f"mixed precision: {counts} for a budget of {', '.join(budget)}: {chosen['size_bytes']} bytes{arena}, "
            f"worst output SQNR {chosen['measured_sqnr_db']} dB "
            + (f"(predicted {chosen['predicted_sqnr_db']} dB)" if chosen["predicted_sqnr_db"] is not None else "(the "
               "noise model predicts none left: int16 gains measured one tensor at a time do not add)")
        )
        if chosen.get("note"):
            click.echo(f"note: {chosen['note']}", err=True)
    if "accuracy_aware" in mixed:
        found = mixed["accuracy_aware"]
        reverted = [f"{s['layer']} {s['change']}" for s in found["steps"] if s["layer"]]
        if "tensors" in found:  # the activation ladder: how many tensors moved, not each (MobileNetV2: 63)
            tensors = found["tensors"]
            reverted.append(f"{len(tensors['moved'])} of {len(tensors['tensors'])} tensors {tensors['precision']}")
        state = "met" if found["met"] else "NOT met"
        click.echo(
            f"accuracy-aware: {found['metric']} drop {found['final_drop']} (max {found['max_drop']}) {state} "
            f"with {found['reverted']} revert(s): {', '.join(reverted) or 'none'}"
        )
        if found.get("note"):
            click.echo(f"warning: {found['note']}", err=True)
