"""Content hashes and atomic tensor files for dataset caches."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from dan.errors import DataFormatError


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (dicts sorted), as hex."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_files(paths: Iterable[Path]) -> str:
    """SHA-256 over every file's name and content, in the given order."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode())
        h.update(b"\0")
        h.update(hashlib.sha1(Path(path).read_bytes()).digest())
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename: never a half-written ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: Path, payload: dict[str, Any]) -> None:
    """Atomically save a dict of tensors and plain values with ``torch.save``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, Any]:
    """Load a file written by :func:`save_tensors`, refusing anything but tensors and plain values."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataFormatError(
            f"cache file {path} is unreadable ({type(exc).__name__}: {exc}); delete it and it will be rebuilt"
        ) from exc
