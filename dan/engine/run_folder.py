"""The folder a run writes to: one per run, claimed before any data is read, locked while the run trains.

A new run of ``run_name`` writes to ``output_dir/run_name``; when that folder already holds an earlier run it
writes to ``run_name-2`` (``-3``, ...) instead, so nothing an earlier run wrote is ever overwritten unless the
config says ``overwrite=true``. A resumed run continues in the folder of the checkpoint it resumes. The folder
is created with an atomic ``mkdir``, so two runs started together never share one, and an exclusive lock
(``.lock``) refuses a second process while the first trains. Writing the lock file also proves the folder is
writable and its disk not full, before any data is built.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dan.engine.checkpoint import write_fix
from dan.errors import ConfigError

try:
    import fcntl
except ImportError:  # not on Windows: the lock is then advisory only (the atomic mkdir still holds)
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"
RUN_FILES = ("last.pt", "best.pt", "results.json", "metrics.jsonl")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,=+@-]*")


def check_run_name(name: str) -> None:
    """``run_name`` must be a plain folder name (letters, digits, ``_ . , = + @ -``; no path, no ``..``)."""
    if not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"run_name={name!r} is not a plain folder name: use letters, digits and _ . , = + @ - only (no '/' "
            f"or '..'); put the runs elsewhere with output_dir=PATH, e.g. run_name=my_run output_dir=runs"
        )


def check_output_dir(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` (``~`` expanded) unless it is the filesystem's root, where run folders would land among
    the system's own folders; ConfigError with the fix then."""
    path = Path(output_dir).expanduser()
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise ConfigError(
            f"output_dir={str(output_dir)!r} is the filesystem root; runs would be written among the system's "
            "folders: choose a folder for runs, e.g. output_dir=runs"
        )
    return path


def holds_run(path: Path) -> bool:
    """Whether ``path`` exists and holds anything but a lock file (an earlier run's files)."""
    return path.is_dir() and any(p.name != LOCK for p in path.iterdir())


@dataclass
class RunFolder:
    """A claimed run folder; :meth:`release` (or process exit) drops its lock."""

    path: Path
    note: str = ""
    handle: IO[str] | None = None

    def release(self) -> None:
        """Unlock the folder; a folder the run left empty (it stopped before writing anything) is removed."""
        if self.handle is None:
            return
        with contextlib.suppress(OSError):
            if not holds_run(self.path):
                (self.path / LOCK).unlink()
                self.path.rmdir()
        with contextlib.suppress(OSError):
            self.handle.close()
        self.handle = None


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write the run folder {path} ({exc.strerror or exc}); nothing was trained. Fix: {write_fix(path, exc)}"
    )


def _lock(path: Path) -> IO[str]:
    lock = path / LOCK
    try:
        handle = open(lock, "a+")  # noqa: SIM115 - held open for the run's lifetime
    except OSError as exc:
        raise _unwritable(path, exc) from None
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"run folder {path} is in use by a run that is still training ({owner}); wait for it to finish, "
                f"or start this one under another name, e.g. run_name={path.name}-b"
            ) from None
    try:
        os.ftruncate(handle.fileno(), 0)
        os.pwrite(handle.fileno(), f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        os.fsync(handle.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            handle.close()
        raise _unwritable(path, exc) from None
    return handle


def _create(path: Path) -> bool:
    """Create ``path`` (parents too); False when it already exists."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except FileExistsError:
        return False
    except OSError as exc:
        raise _unwritable(path, exc) from None
    return True


def claim_free_folder(base: Path, start: int = 1) -> Path:
    """Create and return the first of ``base``, ``base-2``, ``base-3``, ... (from number ``start``; 1 is
    ``base`` itself) that does not exist yet, with an atomic ``mkdir``: two processes never get the same folder."""
    n = start
    while not _create(candidate := base if n == 1 else base.with_name(f"{base.name}-{n}")):
        n += 1
    return candidate


def claim_run_folder(output_dir: str | os.PathLike[str], run_name: str, *, resume: str | None = None,
                     overwrite: bool = False) -> RunFolder:
    """Create (or, for ``resume``, reopen) the run's folder, lock it and check it is writable.

    Returns the folder and a note for the run's header when it is not ``output_dir/run_name``.
    Raises ConfigError naming the folder and the fix when it cannot be written or another run holds it.
    """
    check_run_name(run_name)
    root = check_output_dir(output_dir)
    if resume:
        folder = Path(resume).expanduser().parent
        handle = _lock(folder)
        for stale in folder.glob(".*.pt.*.tmp"):  # a checkpoint write that a kill cut short
            stale.unlink(missing_ok=True)
        return RunFolder(folder, f"continuing the run in {folder}", handle)
    base = root / run_name
    created = _create(base)
    why = ""
    if created or overwrite or not holds_run(base):
        try:
            handle = _lock(base)
        except ConfigError:
            if created or overwrite:
                raise
            handle, why = None, "is in use by another run"  # an empty folder another run has just claimed
    else:
        handle, why = None, "holds an earlier run"
    if handle is not None:
        if overwrite:
            for name in RUN_FILES:
                (base / name).unlink(missing_ok=True)
            for png in base.glob("*.png"):
                png.unlink()
        return RunFolder(base, "", handle)
    candidate = claim_free_folder(base, start=2)
    note = (
        f"{base} {why}, so this one writes to {candidate} (resume={base / 'last.pt'} "
        f"continues that run; overwrite=true replaces it)"
    )
    return RunFolder(candidate, note, _lock(candidate))
