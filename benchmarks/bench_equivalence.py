"""Does a restructuring change what edgeq writes? The same conversions by an earlier revision and by this checkout.

    python benchmarks/bench_equivalence.py REV      # e.g. the commit before a refactor; writes "## Equivalence"

REV is checked out with `git worktree` into a temporary folder and run from there, with this checkout's virtual
environment (its passes/ and targets/ linked into its edgeq/ as the installed package maps them). Each case runs
`edgeq convert` (or `quantize`) once per revision on the same inputs into separate folders, and every artifact
file is compared byte for byte; report.json is not compared (its layout may change), its numbers are printed by
the commands. Then the digits conversion is timed, the two revisions alternately, and the median ratio of wall
times is given (the machine is shared: medians and ratios only).

Cases: the digits CNN for every target (the `make demo` conversion); the digits CNN quantized with equalization,
range search, AdaRound, bias correction and 8-bit dyadic multipliers; MobileNetV2 on photo views for every target
with equalization, range search and bias correction (AdaRound is left out of that case for its time, 2.5 minutes;
its result does not depend on the machine's load, tests/test_adaround.py).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_quantize import mobilenet_photo_setup, replace_section  # noqa: E402

MARKER = "## Equivalence with an earlier revision"
MODELS = REPO / "models"
TIMING_ROUNDS = 5


def _cases(work: Path) -> dict[str, list[str]]:
    mobilenet, calib, _, views = mobilenet_photo_setup("equivalence")
    views_path = work / "views.npz"
    __import__("numpy").savez(views_path, input=views)
    digits = [str(MODELS / "digits_cnn.onnx"), "--calib", str(MODELS / "digits_calib.npz")]
    return {
        "digits CNN, convert --target all --integer-only --precision float (make demo)": [
            "convert", *digits, "--target", "all", "--integer-only", "--precision", "float",
            "--eval-data", str(MODELS / "digits_test.npz"), "-o", "{out}",
        ],
        "digits CNN, quantize with equalize, range-search, adaround, bias-correction, --dyadic-bits 8": [
            "quantize", *digits, "--passes", "equalize,range-search,adaround,bias-correction", "--dyadic-bits", "8",
            "-o", "{out}/digits.qdq.onnx",
        ],
        "MobileNetV2, convert --target all --integer-only, equalize + range-search + bias-correction": [
            "convert", str(mobilenet), "--calib", str(calib), "--target", "all", "--integer-only",
            "--passes", "equalize,range-search,bias-correction", "--eval-data", str(views_path), "-o", "{out}",
        ],
    }  # fmt: skip


def _edgeq(revision: Path | None, args: list[str]) -> float:
    """Run `edgeq ARGS` from REVISION (this checkout when None); seconds of wall time."""
    env = dict(os.environ, PYTHONPATH=str(revision)) if revision else dict(os.environ)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", *args, "--no-progress"], cwd=revision or REPO, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"edgeq {' '.join(args)} failed in {revision or REPO}:\n{done.stderr}")
    return time.perf_counter() - start


def _worktree(revision: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), revision], check=True)
    for package in ("passes", "targets"):  # as pyproject's package-dir installs them
        (folder / "edgeq" / package).symlink_to(folder / package)
    return folder


def _compare(old: Path, new: Path) -> tuple[int, list[str]]:
    names = sorted(({p.name for p in old.iterdir()} | {p.name for p in new.iterdir()}) - {"report.json"})
    differ = [n for n in names if not (old / n).is_file() or not (new / n).is_file() or (old / n).read_bytes() != (new / n).read_bytes()]
    return len(names), differ


def main() -> None:
    revision = sys.argv[1] if len(sys.argv) > 1 else "HEAD~1"
    started = time.perf_counter()
    rows, timing = [], None
    with tempfile.TemporaryDirectory(prefix="edgeq-equivalence-") as tmp:
        work = Path(tmp)
        old_tree = _worktree(revision, work / "old")
        try:
            for name, args in _cases(work).items():
                outs = {}
                for label, tree in (("old", old_tree), ("new", None)):
                    outs[label] = work / f"{len(rows)}-{label}"
                    outs[label].mkdir()
                    _edgeq(tree, [a.replace("{out}", str(outs[label])) for a in args])
                count, differ = _compare(outs["old"], outs["new"])
                rows.append((name, count, differ))
                print(name, count, differ or "identical", flush=True)
            demo = next(iter(_cases(work).values()))
            ratios = []
            for round_ in range(TIMING_ROUNDS):
                seconds = {}
                for label, tree in (("old", old_tree), ("new", None)):
                    out = work / f"timing-{round_}-{label}"
                    out.mkdir()
                    seconds[label] = _edgeq(tree, [a.replace("{out}", str(out)) for a in demo])
                ratios.append(seconds["new"] / seconds["old"])
            timing = statistics.median(ratios), min(ratios), max(ratios)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], check=False)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True, text=True)
    lines = [
        MARKER,
        "",
        f"Command: `python benchmarks/bench_equivalence.py {revision}` ({(time.perf_counter() - started) / 60:.0f} min, "
        f"{time.strftime('%Y-%m-%d')}, the same shared 2-core Xeon as above). Each case ran once per revision "
        f"({commit.stdout.strip()} and this checkout) on the same inputs; every artifact file compared byte for byte "
        "(report.json left out: its layout may change).",
        "",
        "| case | artifact files | differing |",
        "|---|---|---|",
        *(f"| {name} | {count} | {', '.join(differ) if differ else 'none: byte-identical'} |" for name, count, differ in rows),
        "",
        f"`make demo`'s conversion, the two revisions alternately {TIMING_ROUNDS} times: wall time this checkout / "
        f"{commit.stdout.strip()} median {timing[0]:.2f} (min {timing[1]:.2f}, max {timing[2]:.2f}).",
        "",
    ]
    replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
