"""AdaRound's cost and determinism on MobileNetV2 W4A8; writes BENCHMARKS.md's "AdaRound" section.

    python benchmarks/bench_adaround.py            # prints the table (about 6 minutes on 2 cores)
    python benchmarks/bench_adaround.py --write    # and replaces the section

`edgeq quantize --recipe recipes/w4a8.toml` on the same float model and 64 calibration views, twice: once on an
otherwise idle machine and once with a CPU-bound process on every core. Reported: wall time and peak RSS of each
command, logits SQNR and top-1 agreement with fp32 on 256 other photo views, and whether the two models are
byte-identical (AdaRound is bounded by optimizer steps, not seconds).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quantize import (  # noqa: E402
    CACHE,
    EDGEQ,
    machine,
    measured,
    mobilenet_photo_setup,
    replace_section,
    run_model,
)
from edgeq.measure.metrics import sqnr_db, top1_agreement  # noqa: E402

MARKER = "## AdaRound"
# The same command with the AdaRound of revision f828d6d (10 s or 1000 steps per layer, the model's prefix rerun per
# layer; that code is not kept), by the machine it ran on: (seconds, logits SQNR dB, where it was measured)
EARLIER = {
    "AMD EPYC": (430.8, 14.31, "measured once on this machine"),
    "Intel(R) Xeon(R) Processor": (323.3, 14.44, 'BENCHMARKS.md "Accuracy passes", W4A8 AdaRound row, 2026-11-30'),
}


def earlier_lines(idle_seconds: float) -> list[str]:
    """The time of the AdaRound before it was bounded by steps, on this kind of machine, against IDLE_SECONDS."""
    kind = next((k for k in EARLIER if machine().startswith(k)), None)
    if kind is None:
        return ["No earlier AdaRound time was measured on this kind of machine."]
    seconds, sqnr, where = EARLIER[kind]
    return [
        "Before AdaRound was bounded by steps and ran the model layer by layer from a cached cut (revision f828d6d,",
        f"10 s or 1000 steps per layer, the model's prefix rerun per layer), the same command took {seconds:.0f} s on",
        f"this kind of machine ({kind}, idle; {where}) at {sqnr:.2f} dB: {seconds / idle_seconds:.2f}x the idle run's",
        "time.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's AdaRound section")
    args = parser.parse_args()
    model, calib, _, views = mobilenet_photo_setup("adaround")
    reference = run_model(model, views)
    rows, outputs = {}, {}
    for load in ("idle", "busy"):
        out = CACHE / "adaround" / f"w4a8_{load}.onnx"
        out.unlink(missing_ok=True)
        burners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() if load == "busy" else 0)
        ]
        try:
            result = measured(
                [*EDGEQ, "quantize", str(model), "-o", str(out), "--calib", str(calib), "--recipe", "recipes/w4a8.toml"]
            )
        finally:
            for burner in burners:
                burner.kill()
        quantized = run_model(out, views)
        outputs[load] = out.read_bytes()
        rows[load] = {
            "seconds": result["seconds"],
            "peak_rss_mb": result["peak_rss_mb"],
            "sqnr": float(sqnr_db(reference, quantized)),
            "agreement": float(top1_agreement(reference, quantized)),
        }
        print(load, rows[load], flush=True)
    identical = outputs["idle"] == outputs["busy"]
    lines = [
        MARKER,
        "",
        "Command: `python benchmarks/bench_adaround.py --write`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}",
        "",
        "MobileNetV2 (torchvision weights), `edgeq quantize --recipe recipes/w4a8.toml` (4-bit per-channel weights,",
        "AdaRound, 500 Adam steps per layer) on 64 calibration views; logits against fp32 on 256 other views. The second",
        f"run has a CPU-bound process on each of the {os.cpu_count()} cores beside it.",
        "",
        "| run | wall s | peak RSS MB | logits SQNR dB | top-1 agreement |",
        "|---|---|---|---|---|",
        *(
            f"| {load} machine | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['sqnr']:.2f} | {r['agreement']:.3f} |"
            for load, r in rows.items()
        ),
        "",
        f"The two models are {'byte-identical' if identical else 'DIFFERENT'}.",
        *earlier_lines(rows["idle"]["seconds"]),
        "",
    ]
    print("\n".join(lines))
    if args.write:
        replace_section(MARKER, lines)
    if not identical:
        sys.exit("the idle and busy runs wrote different models")


if __name__ == "__main__":
    main()
