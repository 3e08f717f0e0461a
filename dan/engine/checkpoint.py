"""Self-describing checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values (no pickled classes)::

    format, dan_version, config (resolved dict), model (state_dict), optimizer, scheduler, balancer,
    scaler, rng {torch, cuda, python}, progress {epoch, step, batch, ...}, manifest_hash,
    preprocessing, modalities, metrics

:class:`CheckpointManager` keeps ``last.pt`` and ``best.pt`` of a run directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import secrets
import warnings
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dan.engine.checkpoint_integrity import (
    CHECKSUMS,
    check_archive,
    check_checksums,
    check_structure,
    tensor_checksums,
)
from dan.errors import CheckpointError, describe

FORMAT = "dan-checkpoint/1"
_MAGIC = {b"\x89PNG": "it is a PNG image", b"\xff\xd8": "it is a JPEG image", b"RIFF": "it is a WAV recording",
          b"\x93NUM": "it is a .npy array"}
LAST, BEST = "last.pt", "best.pt"


def package_version(name: str) -> str | None:
    """The installed version of package ``name`` (None when it is not installed)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def dan_version() -> str:
    """The installed dan version."""
    return package_version("dan") or "unknown"


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, ``os.replace``.

    A failed write (full disk, read-only or unwritable folder) leaves any previous ``path`` untouched and
    raises CheckpointError naming the path and the fix.
    """
    path = Path(path)
    payload = {"format": FORMAT, "dan_version": dan_version(), **state}
    payload[CHECKSUMS] = tensor_checksums(payload)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_temp_file(path)
        with os.fdopen(fd, "wb") as f:
            writer = _Writer(f)
            try:
                torch.save(payload, writer)  # type: ignore[arg-type]
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None  # torch wraps the write's OSError (e.g. ENOSPC) in a RuntimeError
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise CheckpointError(_write_failure(path, exc)) from exc
    except BaseException:
        _discard(tmp)
        raise
    return path


def new_temp_file(path: Path) -> tuple[int, str]:
    """A new, uniquely named ``.<name>.<random>.tmp`` beside ``path``, open for writing: its descriptor and
    path. Created with mode 0666 so the umask applies, as to any new file (mkstemp would make it 0600)."""
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


class _Writer:
    """A binary file for ``torch.save`` that remembers the OSError a write raised."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)


def write_fix(folder: Path, exc: OSError) -> str:
    """What to do when writing into ``folder`` failed with ``exc``: free space, make it writable, or move."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on the disk holding {folder} or set output_dir= to another disk"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"make {folder} writable or set output_dir= to a writable folder"
    return "set output_dir= to a writable folder with free space"


def _write_failure(path: Path, exc: OSError) -> str:
    kept = "the previous checkpoint there is intact" if path.exists() else "no checkpoint was written"
    return f"could not write checkpoint {path} ({exc.strerror or exc}); {kept}. Fix: {write_fix(path.parent, exc)}"


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises CheckpointError naming the file where it is missing, truncated, damaged (a member's CRC-32 or a
    tensor's recorded checksum differs), not a dan checkpoint, holds entries of the wrong type, or holds pickled
    objects other than tensors and plain values (a file crafted to run code is refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass the path of a .pt file a run wrote")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a bare pickle (refused below)
        kind = next((k for m, k in _MAGIC.items() if magic.startswith(m)), "not a zip archive")
        raise CheckpointError(
            f"{path} is not a dan checkpoint ({kind}); pass the best.pt or last.pt a dan train run wrote"
        )
    if magic.startswith(b"PK"):
        check_archive(path)
    try:
        with warnings.catch_warnings():  # a damaged pickle makes torch warn before it fails: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()
        detail = next(
            (line for line in reason if "GLOBAL" in line or "Unsupported" in line),
            reason[0] if reason else "",
        )
        raise CheckpointError(
            f"{path}: refused to load: it holds pickled objects that are not plain tensors or values "
            f"({detail.strip()}); only load checkpoints from sources you trust, re-saved with dan"
        ) from None
    except Exception as exc:  # a damaged pickle can fail in the unpickler with any exception type
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({describe(exc)}); use another copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a dan checkpoint (format {found!r}, expected {FORMAT!r})")
    check_structure(path, state)
    check_checksums(path, state)
    weights = state.get("model") or {}
    bad = nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} of {len(weights)} weight tensors hold NaN or Inf ({_brief(bad, 3)}); it cannot be "
            "evaluated, used or resumed: take an earlier checkpoint, or train again with a lower optimizer.lr"
        )
    return state


def nonfinite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold NaN or Inf."""
    return [
        k for k, v in state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def load_model_state(
    model: nn.Module, state_dict: Mapping[str, Any], source: str = "checkpoint", shapes_only: bool = False
) -> None:
    """Load ``state_dict`` into ``model`` strictly; a CheckpointError names every mismatched key. With
    ``shapes_only`` only the keys and shapes are compared (``model`` may live on the ``meta`` device)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != own[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys {_brief(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_brief(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches (checkpoint vs model) {_brief(shapes)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model: {'; '.join(problems)}; build the model from the "
            "checkpoint's own config (dan.load does) or train a new one"
        )
    if not shapes_only:
        model.load_state_dict(state_dict, strict=True)


def _brief(items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from: torch CPU, CUDA (where available) and Python's ``random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet) by more than ``min_delta`` in ``mode`` ``max`` or
    ``min``: the rule that decides which checkpoint is ``best.pt`` and when early stopping counts an epoch
    as an improvement. In ``mode`` ``last`` every epoch does."""
    if best is None or mode == "last":
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class CheckpointManager:
    """Keeps ``last.pt`` (every save) and ``best.pt`` (when ``metric`` improves) in ``run_dir``."""

    def __init__(self, run_dir: str | os.PathLike[str], mode: str = "max") -> None:
        self.run_dir = Path(run_dir)
        self.mode = mode
        self.best: float | None = None
        self.saved_step: int | None = None  # step of the last checkpoint this run wrote

    @property
    def last_path(self) -> Path:
        """Path of the latest checkpoint."""
        return self.run_dir / LAST

    @property
    def best_path(self) -> Path:
        """Path of the best checkpoint so far."""
        return self.run_dir / BEST

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best metric recorded so far."""
        return improves(value, self.best, self.mode)

    def save(self, state: Mapping[str, Any], metric: float | None = None) -> bool:
        """Write ``last.pt``; also ``best.pt`` when ``metric`` improves. Returns whether it was the best."""
        is_best = metric is not None and self.improves(metric)
        if is_best:
            self.best = metric
        save_checkpoint(self.last_path, {**state, "best_metric": self.best})
        if is_best:
            save_checkpoint(self.best_path, {**state, "best_metric": self.best})
        return is_best
