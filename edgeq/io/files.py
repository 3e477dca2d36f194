"""Output paths: never overwrite an input, never leave a half-written file.

Every artifact is written to a temporary file in the destination folder and renamed over the destination,
so a reader (or a crash) never sees a partial file. A command that writes several artifacts into a folder stages
them in a hidden folder inside it (StagedOutput) and moves them into place only after all of them validated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
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
    OUTDIR is removed, and OUTDIR itself if it created it: a failed command leaves nothing new behind, and what
    was there before is untouched."""
    out = Path(outdir)
    existed = out.is_dir()
    before = set(out.iterdir()) if existed else set()
    out = prepare_output_dir(out, *inputs)
    try:
        yield out
    except BaseException:
        for entry in set(out.iterdir()) - before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


class StagedOutput:
    """Files written into a hidden folder inside an output folder and moved into it together by ``commit``, after
    the command has validated them: until then the output folder holds exactly what it held before."""

    def __init__(self, out: Path, inputs: list[Path]):
        self.out = out
        self.inputs = inputs
        try:
            self.folder = Path(tempfile.mkdtemp(prefix=".edgeq-staging-", dir=out))
        except OSError as exc:
            raise OutputError(f"cannot write into output directory {out}: {exc.strerror}") from None

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

    def commit(self, stale: list[Path] = ()) -> tuple[list[Path], list[Path]]:
        """Move every staged file into the output folder (over a file of the same name), then delete the files of
        STALE (earlier artifacts this command did not write again) that exist and are no input; returns (replaced,
        removed). Nothing moves when a destination is an input or a folder."""
        staged = sorted(self.folder.iterdir())
        destinations = [self.out / path.name for path in staged]
        for destination in destinations:
            if any(_same_file(destination, src) for src in self.inputs):
                raise OutputError(f"output {destination} is one of the inputs; choose another output directory")
            if destination.is_dir() and not destination.is_symlink():
                raise OutputError(f"output {destination} is a directory; move it or choose another output directory")
        replaced = [d for d in destinations if d.exists() or d.is_symlink()]
        removed = [
            path
            for path in stale
            if path not in destinations and path.is_file() and not any(_same_file(path, src) for src in self.inputs)
        ]
        try:
            for path, destination in zip(staged, destinations, strict=True):
                os.replace(path, destination)
            for path in removed:
                path.unlink()
        except OSError as exc:
            raise OutputError(f"cannot write into output directory {self.out}: {exc.strerror}") from None
        return replaced, removed


@contextlib.contextmanager
def staged_output(outdir: str | os.PathLike, *inputs: str | os.PathLike | None) -> Iterator[StagedOutput]:
    """OUTDIR prepared as by output_dir, with a StagedOutput inside it for the block to write to; the staging
    folder is removed when the block ends, committed or not."""
    with output_dir(outdir, *inputs) as out:
        staged = StagedOutput(out, [Path(src) for src in inputs if src is not None])
        try:
            yield staged
        finally:
            shutil.rmtree(staged.folder, ignore_errors=True)


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
