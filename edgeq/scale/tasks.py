"""``map_tasks(function, items)``: ``[function(item) for item in items]``, each call one Ray task.

Where the calls run (ADDRESS):

* None: a Ray instance embedded in this process, started on first use (``ray.init(address="local")``: never a
  cluster that RAY_ADDRESS names) with one CPU per core of this machine, no dashboard, Ray's log lines below
  errors silenced, an object store of EMBEDDED_OBJECT_STORE_BYTES (256 MiB; Ray would otherwise take 30% of
  the machine's memory; larger objects spill to disk), its session files in a temporary folder removed at
  exit, and (unless RAY_AUTH_MODE is set) an authentication token of its own in the process's environment, not
  in ~/.ray/auth_token where Ray would write one. Later calls in the process reuse it; so does a call made after
  the caller's own ``ray.init``;
* "host:port" or "auto" (RAY_ADDRESS, or the cluster last started on this machine): ``ray.init(address=...)`` on
  an existing cluster. A host:port that does not accept a TCP connection within CONNECT_SECONDS, or a cluster
  Ray cannot join, is one ``ExecutionError`` line naming the address. Every node must have edgeq and the
  same Ray installed, and see the paths the calls read and write;
* "serial", or Ray not installed: in this process, one call after the other; the same results.

FUNCTION must be picklable by reference (a module-level function of an installed module): Ray's workers import
it. Results come back in ITEMS' order. A call that raises an ``EdgeqError`` raises the same error (type and
message) in the caller; any other exception is re-raised as itself, chained to Ray's error, which holds the
worker's traceback. The first failure cancels the calls not yet finished.

Large inputs every call needs (a model's bytes, a data set) go in SHARED: it is put into Ray's object store once
(``ray.put``) and each call gets ``function(item, shared)``; serially it is passed as it is. Putting it in each
item instead would copy it once per task.

Sizing: a task costs Ray a few milliseconds, and each new worker process imports FUNCTION's module once (edgeq:
about 3 s), so tasks of a second or more keep the overhead small. Each task holds one CPU, and ``task_threads()``
is 1 inside a task, which edgeq.io.session gives onnxruntime as its intra-op thread count: two tasks on two
cores then use one core each instead of four threads fighting over two cores.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable

from tqdm import tqdm

from edgeq.errors import EdgeqError, ExecutionError, RecipeError, first_line

SERIAL = "serial"
AUTO = "auto"
EMBEDDED_OBJECT_STORE_BYTES = 256 * 1024 * 1024
AUTH_SETTINGS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
CONNECT_SECONDS = 5  # a cluster's GCS port that has not answered by then is taken as unreachable
_UNSHARED = object()

# The Ray instance map_tasks made: the address it was given (None: embedded); the embedded one's temp folder and
# the authentication settings it changed.
_session: dict = {}
# Intra-op threads for runtimes inside the current task (None outside tasks: the runtime's default).
_threads: int | None = None


def task_threads() -> int | None:
    """Threads a runtime should use here: 1 inside a map_tasks task on Ray (the task holds one CPU), else None."""
    return _threads


def map_tasks(
    function: Callable,
    items: Iterable,
    *,
    address: str | None = None,
    progress: bool = False,
    description: str = "",
    shared=_UNSHARED,
) -> list:
    """``[function(item) for item in items]`` (``function(item, shared)`` with SHARED), each call a Ray task on
    ADDRESS (module docstring); a tqdm bar over finished calls with PROGRESS, labelled DESCRIPTION."""
    items = list(items)
    extra = () if shared is _UNSHARED else (shared,)
    ray = _ray(address) if items else None
    with tqdm(total=len(items), desc=description or None, unit="task", disable=not progress) as bar:
        if ray is None:
            results = []
            for item in items:
                results.append(function(item, *extra))
                bar.update()
            return results
        return _gather(ray, function, items, extra, bar)


def _run_task(function: Callable, item, *shared):
    """FUNCTION(ITEM, *SHARED) in a Ray worker, with task_threads() 1 for its duration."""
    global _threads
    _threads = 1
    try:
        return function(item, *shared)
    finally:
        _threads = None


def _gather(ray, function: Callable, items: list, extra: tuple, bar) -> list:
    remote = ray.remote(num_cpus=1)(_run_task)
    shared_refs = [ray.put(value) for value in extra]
    refs = [remote.remote(function, item, *shared_refs) for item in items]
    pending = refs
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # raises the task's error
            bar.update(len(done))
        return ray.get(refs)
    except BaseException as exc:
        for ref in pending:
            ray.cancel(ref)
        cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
        if isinstance(cause, EdgeqError):
            raise cause from None
        if isinstance(cause, Exception):
            raise cause from exc
        raise


def _ray(address: str | None):
    """The ray module, initialized for ADDRESS; None to run serially ("serial", or Ray not installed)."""
    check_address(address)
    if address == SERIAL:
        return None
    if address not in (None, AUTO):
        _probe(address)  # before anything is started or left
    try:
        import ray
    except ImportError:
        return None
    if ray.is_initialized() and _session.get("address", address) == address:
        return ray  # ours for this address, or the caller's own ray.init
    _shutdown()  # ours for another address, or the files of one that was shut down without us
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports usage to its vendor unless told not to
    if address is None:
        # Ray turns on token authentication for a new local instance (RAY_AUTH_MODE=token in this process) and
        # would write the token to ~/.ray/auth_token; a token of this process's own keeps the protection and
        # writes nothing. Both settings are undone at shutdown, for a cluster joined next.
        _session["environment"] = {name: os.environ.get(name) for name in AUTH_SETTINGS}
        if "RAY_AUTH_MODE" not in os.environ:
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        temp = tempfile.mkdtemp(prefix="edgeq-ray-")
        _session.update(temp=temp)
        try:
            ray.init(
                address="local",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
                _temp_dir=temp,
            )
        except BaseException:
            _shutdown()
            raise
    else:
        _connect(ray, address)
    _session["address"] = address
    if not _session.get("registered"):
        atexit.register(_shutdown)
        _session["registered"] = True
    return ray


def _probe(address: str) -> None:
    """Refuse a host:port that does not accept a TCP connection within CONNECT_SECONDS: ray.init would retry it
    for minutes."""
    try:
        socket.create_connection(_host_port(address), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ExecutionError(f"cannot reach a Ray cluster at {address}: {exc.strerror or first_line(exc)}") from None


def _connect(ray, address: str) -> None:
    """ray.init on the cluster at ADDRESS, refused in one line when Ray cannot join it."""
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as exc:
        text = " ".join(str(e) for e in (exc, exc.__cause__) if e is not None)
        hint = (
            " (the cluster uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN)"
            if "InvalidAuthToken" in text
            else ""
        )
        raise ExecutionError(f"cannot connect to the Ray cluster at {address}: {first_line(exc)}{hint}") from None


def check_address(address: str | None) -> None:
    """Refuse, in one line, an ADDRESS map_tasks does not take (before anything is started or written)."""
    if address not in (None, AUTO, SERIAL):
        _host_port(address)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RecipeError(f"Ray address {address!r} is not host:port, {AUTO} or {SERIAL}")
    return host, int(port)


def _shutdown() -> None:
    """Leave the Ray instance map_tasks made, removing the embedded one's session files."""
    import ray

    if "address" in _session:
        ray.shutdown()
    temp = _session.pop("temp", None)
    if temp:
        shutil.rmtree(temp, ignore_errors=True)
    environment = _session.pop("environment", None)
    if environment is not None:
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        ray._raylet.Config.initialize("")  # Ray caches its settings: reread them, as Ray does when it sets them
    _session.pop("address", None)
