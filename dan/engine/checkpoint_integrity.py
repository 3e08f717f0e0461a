"""Integrity of a checkpoint file: its zip archive, a checksum of every tensor, and the shape of its contents.

``torch.save`` writes an uncompressed zip whose members each carry a CRC-32; :func:`check_archive` verifies them
all before ``torch.load`` reads a byte, so a flipped bit anywhere in a member is caught. On top of that
``save_checkpoint`` records :func:`tensor_checksums` inside the checkpoint and :func:`check_checksums` compares
them with the tensors ``torch.load`` returned, so corrupt weights are caught even in a re-packed archive.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from dan.errors import CheckpointError, describe

CHECKSUMS = "checksums"
_TYPES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "model": dict, "progress": dict, "modalities": (list, tuple), "preprocessing": dict, "manifest_hash": str,
    "rng": dict, "modules": dict, "optimizer": dict, "module_optimizer": dict, "scheduler": dict, "scaler": dict, "metric_model": dict,
    "verification": dict,
}


def _tensors(node: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(node, torch.Tensor):
        yield prefix, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _tensors(value, f"{prefix}/{i}")


def _crc(t: torch.Tensor) -> int:
    head = zlib.crc32(f"{t.dtype} {tuple(t.shape)}".encode())  # bytes read as another dtype or shape differ too
    raw = t.detach().to("cpu", copy=False).contiguous().reshape(-1).view(torch.uint8)
    return zlib.crc32(raw.numpy(), head)


def tensor_checksums(state: Mapping[str, Any]) -> dict[str, int]:
    """CRC-32 of the dtype, shape and bytes of every tensor in ``state`` (any nesting of dicts, lists and
    tuples) but its own checksum table, keyed by its path, e.g. ``"/model/trunk.0.weight"`` or
    ``"/optimizer/state/0/exp_avg"``."""
    body = {k: v for k, v in state.items() if k != CHECKSUMS}
    return {name: _crc(t) for name, t in _tensors(body, "")}


def check_checksums(path: Path, state: Mapping[str, Any]) -> None:
    """Raise CheckpointError naming ``path`` and the first tensors whose bytes differ from the checksums
    recorded at save (checkpoints written before checksums existed carry none and are not checked)."""
    recorded = state.get(CHECKSUMS)
    if recorded is None:
        return
    if not isinstance(recorded, Mapping):
        raise CheckpointError(f"{path}: corrupt checkpoint (its checksum table is a {type(recorded).__name__}); use another copy")
    found = tensor_checksums(state)
    bad = sorted(k for k in set(found) | set(recorded) if found.get(k) != recorded.get(k))
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise CheckpointError(
            f"{path}: corrupt checkpoint: {len(bad)} tensors do not match the checksums recorded when it was "
            f"saved ({', '.join(bad[:3])}{more}); the file was damaged after writing: use another copy"
        )


def check_archive(path: Path) -> None:
    """Verify the zip archive ``torch.save`` wrote: every member stored uncompressed, no member larger than the
    file, and every member's CRC-32 right. Raises CheckpointError naming ``path`` otherwise."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for info in members:
                if info.compress_type != zipfile.ZIP_STORED or max(info.file_size, info.compress_size) > size:
                    raise CheckpointError(
                        f"{path}: corrupt checkpoint (archive member {info.filename!r} claims "
                        f"{info.file_size} bytes, compression {info.compress_type}); use another copy"
                    )
            bad = archive.testzip()
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile raises BadZipFile, EOFError, OSError, ValueError, struct.error...
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({describe(exc)}); use another copy") from None
    if bad is not None:
        raise CheckpointError(
            f"{path}: corrupt checkpoint (archive member {bad!r} fails its CRC-32 check); the file was damaged "
            "after writing: use another copy"
        )


def check_structure(path: Path, state: dict[str, Any]) -> None:
    """Raise CheckpointError naming ``path`` and the key where an entry of a loaded checkpoint does not have
    the type dan writes (``model`` a dict of named tensors, ``config`` a dict, ...). Which entries must be
    present is the reader's business (``dan.load`` needs ``config`` and ``model``, resume ``progress``)."""
    for key, kinds in _TYPES.items():
        if state.get(key) is not None and not isinstance(state[key], kinds):
            raise CheckpointError(
                f"{path}: not a usable dan checkpoint: {key!r} is a {type(state[key]).__name__}; pass the best.pt "
                "or last.pt a dan train run wrote"
            )
    odd = [repr(k) for k, v in (state.get("model") or {}).items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise CheckpointError(
            f"{path}: not a usable dan checkpoint: its model weights hold entries that are not named tensors "
            f"({', '.join(odd[:3])}); pass the best.pt or last.pt a dan train run wrote"
        )
