"""Output paths: never overwrite an input, never leave a half-written file.

Every artifact is written to a temporary file in the destination folder and renamed over the destination,
so a reader (or a crash) never sees a partial file. A command that writes several artifacts stages them in a
hidden folder inside their output folder (StagedOutput; staged_files for files in several folders) and moves them
into place only after all of them validated.

A run killed before it could remove its staging folder (SIGKILL, power loss) leaves it behind; the next staging
in that folder removes it. A staging folder is named ``.edgeq-staging-<pid>-<random>`` and its run holds an
exclusive ``flock`` on it while it lives: one is stale when its lock is free (the kernel drops a dead process's
locks) and its pid names no live process here (the lock is taken just after the folder is created).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import OutputError


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Refuse an output that is one of the inputs or lies in a folder that cannot be written."""
    out = Path(output)
    for src in inputs:
        if src is not None and _same_file(out, Path(src)):
            raise OutputError(f"output path {out} is the input file; choose another output")
    if out.is_dir():
        raise OutputError(f"output path {out} is a directory; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable")
    return out


def prepare_output_dir(outdir: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Create OUTDIR if needed and check that it is writable and holds none of the inputs' paths."""
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output directory {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {out} is not writable")
    return out


@contextlib.contextmanager
def output_dir(outdir: str | os.PathLike, *inputs: str | os.PathLike | None) -> Iterator[Path]:
    """OUTDIR prepared (prepare_output_dir) for the block. If the block fails, every file and folder it added to
    OUTDIR is removed (but staging folders, which their runs remove), and OUTDIR itself if it created it: a failed
    command leaves nothing new behind, and what was there before is untouched."""
    out = Path(outdir)
    existed = out.is_dir()
    before = set(out.iterdir()) if existed else set()
    out = prepare_output_dir(out, *inputs)
    try:
        yield out
    except BaseException:
        for entry in {e for e in out.iterdir() if not e.name.startswith(STAGING_PREFIX)} - before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


STAGING_PREFIX = ".edgeq-staging-"


class StagedOutput:
    """Files written into a hidden folder inside an output folder and moved into it together by ``commit``, after
    the command has validated them: until then the output folder holds exactly what it held before. Creating one
    removes the staging folders of runs that are no longer alive (``swept``); ``close`` removes its own."""

    def __init__(self, out: Path, inputs: list[Path]):
        self.out = out
        self.inputs = inputs
        self.swept = remove_stale_staging(out)
        try:
            self.folder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
        except OSError as exc:
            raise OutputError(f"cannot write into output directory {out}: {exc.strerror}") from None
        self._lock = os.open(self.folder, os.O_RDONLY)
        with contextlib.suppress(OSError):  # a file system without flock: the pid alone keeps the folder
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        """Remove the staging folder (and what was not committed), then release its lock."""
        shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self._lock)

    def final(self, value):
        """VALUE (a path, or a string, list or dict holding staged paths, dict keys included) with every staged
        path as it will be after the commit: what reports written before the commit must say."""
        if isinstance(value, Path):
            return Path(self.final(str(value)))
        if isinstance(value, str):
            return value.replace(str(self.folder), str(self.out))
        if isinstance(value, dict):
            return {self.final(k): self.final(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.final(v) for v in value)
        return value

    def destinations(self) -> list[tuple[Path, Path]]:
        """(staged file, where the commit moves it) for every staged file; raises OutputError when one cannot be
        moved (its destination is an input or a folder)."""
        moves = [(path, self.out / path.name) for path in sorted(self.folder.iterdir())]
        for _, destination in moves:
            if any(_same_file(destination, src) for src in self.inputs):
                raise OutputError(f"output {destination} is one of the inputs; choose another output directory")
            if destination.is_dir() and not destination.is_symlink():
                raise OutputError(f"output {destination} is a directory; move it or choose another output directory")
        return moves

    def commit(self, stale: list[Path] = ()) -> tuple[list[Path], list[Path]]:
        """Move every staged file into the output folder (over a file of the same name), then delete the files of
        STALE (earlier artifacts this command did not write again) that exist and are no input; returns (replaced,
        removed: those files and the stale staging folders swept). Nothing moves when a destination is an input or
        a folder."""
        moves = self.destinations()
        destinations = [destination for _, destination in moves]
        replaced = [d for d in destinations if d.exists() or d.is_symlink()]
        removed = [
            path
            for path in stale
            if path not in destinations and path.is_file() and not any(_same_file(path, src) for src in self.inputs)
        ]
        try:
            for path, destination in moves:
                os.replace(path, destination)
            for path in removed:
                path.unlink()
        except OSError as exc:
            raise OutputError(f"cannot write into output directory {self.out}: {exc.strerror}") from None
        return replaced, [*self.swept, *removed]


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders in OUT whose runs are gone (their lock is free and their pid is no live
    process); returns them."""
    removed = []
    for folder in sorted(out.glob(f"{STAGING_PREFIX}*")):
        pid = folder.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if not folder.is_dir() or folder.is_symlink() or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            lock = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder)
            removed.append(folder)
        except OSError:  # BlockingIOError: a live run (in any pid namespace) holds its lock
            pass
        finally:
            os.close(lock)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


@contextlib.contextmanager
def staged_output(outdir: str | os.PathLike, *inputs: str | os.PathLike | None) -> Iterator[StagedOutput]:
    """OUTDIR prepared as by output_dir, with a StagedOutput inside it for the block to write to; the staging
    folder is removed when the block ends, committed or not."""
    with output_dir(outdir, *inputs) as out:
        staged = StagedOutput(out, [Path(src) for src in inputs if src is not None])
        try:
            yield staged
        finally:
            staged.close()


@dataclass
class StagedFiles:
    """Files that appear together or not at all: ``paths`` are where to write them (in a StagedOutput per
    folder); ``swept`` the stale staging folders those removed."""

    paths: list[Path]
    swept: list[Path]


@contextlib.contextmanager
def staged_files(*destinations: str | os.PathLike, inputs=()) -> Iterator[StagedFiles]:
    """DESTINATIONS (files, checked by check_output_path) staged for the block to write; when it succeeds, every
    one moves into place, after all were checked to be movable; when it fails, none appears and no staging
    folder remains."""
    paths = [Path(d) for d in destinations]
    sources = [Path(src) for src in inputs if src is not None]
    stagings: dict[Path, StagedOutput] = {}
    try:
        for path in paths:
            if path.parent not in stagings:
                stagings[path.parent] = StagedOutput(path.parent, sources)
        yield StagedFiles(
            [stagings[path.parent].folder / path.name for path in paths],
            [folder for staging in stagings.values() for folder in staging.swept],
        )
        for staging in stagings.values():
            staging.destinations()
        for staging in stagings.values():
            staging.commit()
    finally:
        for staging in stagings.values():
            staging.close()


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside DESTINATION; rename it over DESTINATION only if the block succeeds."""
    dest = Path(destination)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent or ".")
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; a written artifact gets normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(destination: str | os.PathLike, data: bytes) -> None:
    with atomic_path(destination) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(destination: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(destination, text.encode("utf-8"))


def json_text(data) -> str:
    """DATA as indented JSON: numpy arrays and scalars become lists and numbers, paths strings (NaN allowed)."""

    def default(obj):
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"cannot serialize {type(obj).__name__}")

    return json.dumps(data, indent=2, default=default, allow_nan=True)
