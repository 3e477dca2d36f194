"""Run a Python module as ``python -m`` would, then print this process's peak RSS (VmHWM) as the last
stderr line. Measuring inside the process matters: a forked child's ru_maxrss includes its parent's size."""

import os
import runpy
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    sys.path[0] = os.getcwd()  # as `python -m` does
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    print(f"PEAK_RSS_MB {peak_rss_mb():.1f}", file=sys.stderr)
    sys.exit(code)
