"""edgeq.scale.map_tasks: the same results serially, on the embedded Ray instance and on a real two-node local
cluster (`ray start` on 127.0.0.1); a task's EdgeqError reaches the caller as the same one-line error."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from ray_cluster import free_port, local_cluster

from edgeq.errors import ExecutionError, RecipeError
from edgeq.measure.metrics import sqnr_db
from edgeq.quantization.recipe import parse_input_shape
from edgeq.scale import map_tasks

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install edgeq[ray])")

NODE_OBJECT_STORE_BYTES = 100_000_000  # per node of the test cluster (Ray's floor is 75 MB)


def _noisy_copies(count: int = 6) -> tuple[list[np.ndarray], np.ndarray]:
    """COUNT noisy copies of one reference signal, each with its own noise level, and the reference."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=4096)
    return [reference + rng.normal(size=4096) * 10.0 ** -(i / 2) for i in range(count)], reference


@pytest.fixture(scope="module")
def cluster():
    """A head and a second worker node, one CPU each, on 127.0.0.1 (tests/ray_cluster.py)."""
    with local_cluster(2, NODE_OBJECT_STORE_BYTES) as address:
        yield address


@pytest.mark.slow
def test_a_real_two_node_cluster_gives_the_serial_results(cluster):
    items, reference = _noisy_copies()
    serial = map_tasks(sqnr_db, items, shared=reference, address="serial")
    assert map_tasks(sqnr_db, items, shared=reference, address=cluster) == serial
    nodes = [node for node in ray.nodes() if node["Alive"]]
    assert len(nodes) == 2 and all(node["Resources"]["CPU"] == 1 for node in nodes)
    with pytest.raises(RecipeError) as raised:
        map_tasks(parse_input_shape, ["1,3,8,8", "x=1,,3"], address=cluster)
    assert str(raised.value) == "--input-shape 'x=1,,3': expected NAME=1,3,320,320 (positive integers)"


@pytest.mark.slow
def test_embedded_ray_gives_the_serial_results_and_is_started_once():
    items, reference = _noisy_copies()
    serial = map_tasks(sqnr_db, items, shared=reference, address="serial")
    assert serial == [sqnr_db(item, reference) for item in items]
    assert map_tasks(sqnr_db, items, shared=reference, progress=True, description="sqnr") == serial
    instance = ray.get_runtime_context().gcs_address
    assert map_tasks(parse_input_shape, ["x=1,3", "2,4"]) == [("x", [1, 3]), ("", [2, 4])]
    assert ray.get_runtime_context().gcs_address == instance  # the second call reused the first's instance


def test_without_ray_the_calls_run_serially(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    items, reference = _noisy_copies(3)
    assert map_tasks(sqnr_db, items, shared=reference) == [sqnr_db(item, reference) for item in items]
    with pytest.raises(RecipeError, match="^--input-shape 'y=0': expected"):
        map_tasks(parse_input_shape, ["y=0"])


def test_a_task_error_reaches_the_caller_as_itself():
    with pytest.raises(RecipeError) as raised:
        map_tasks(parse_input_shape, ["1,3,8,8", "x=1,,3"])
    assert str(raised.value) == "--input-shape 'x=1,,3': expected NAME=1,3,320,320 (positive integers)"
    with pytest.raises(ValueError) as internal:  # not an EdgeqError: the worker's exception, chained to Ray's
        map_tasks(int, ["7", "seven"])
    assert str(internal.value) == "invalid literal for int() with base 10: 'seven'"


def test_an_unreachable_or_malformed_address_is_one_line():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ExecutionError, match=f"^cannot reach a Ray cluster at {address}: ") as raised:
        map_tasks(abs, [1], address=address)
    assert "\n" not in str(raised.value) and time.monotonic() - start < 30
    for malformed in ("127.0.0.1", "127.0.0.1:port", "127.0.0.1:70000"):
        with pytest.raises(RecipeError, match="is not host:port, auto or serial$"):
            map_tasks(abs, [1], address=malformed)
