"""A real local Ray cluster for the tests and benchmarks: ``ray start`` on 127.0.0.1, a head and WORKERS - 1 more
nodes, one CPU each, stopped by process id (never `ray stop`, which would stop every Ray instance on the machine),
its session files in a temporary folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """`ray start --block ARGS` (it stops the processes it started when terminated), once it says it started."""
    ray_cli = Path(sys.executable).with_name("ray")
    with open(log, "w") as out:
        process = subprocess.Popen([str(ray_cli), "start", "--block", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_SECONDS
    while "Ray runtime started" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"ray start {' '.join(args)} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    return process


@contextlib.contextmanager
def local_cluster(workers: int, object_store_bytes: int) -> Iterator[str]:
    """A cluster of WORKERS one-CPU nodes with OBJECT_STORE_BYTES of object store each; yields its address."""
    import ray

    temp = Path(tempfile.mkdtemp(prefix="edgeq-ray-cluster-"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    common = ["--num-cpus", "1", "--object-store-memory", str(object_store_bytes), "--disable-usage-stats"]
    head = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir", str(temp),
            "--include-dashboard", "false"]  # fmt: skip
    logs = [temp.with_suffix(f".node{i}.log") for i in range(workers)]
    started = []
    try:
        started.append(_ray_start([*head, *common], logs[0], env))
        for log in logs[1:]:
            started.append(_ray_start(["--address", f"127.0.0.1:{port}", *common], log, env))
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized() and ray.get_runtime_context().gcs_address.endswith(f":{port}"):
            ray.shutdown()  # still connected to the cluster: leave it before it stops
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(temp, ignore_errors=True)
        for log in logs:
            log.unlink(missing_ok=True)
