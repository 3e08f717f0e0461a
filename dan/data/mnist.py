"""MNIST idx files: the official file table, loading any MNIST-format files, checking and downloading them.

Files live in ``<data root>/mnist/``, gzipped (``t10k-images-idx3-ubyte.gz``) or raw
(``t10k-images-idx3-ubyte``). Gzipped files are decompressed in memory, only as far as the header says the
body reaches, never into the (possibly read-only) data folder.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import MNIST

from dan.data.download import download_file, file_hash
from dan.data.files import regular_file
from dan.errors import ConfigError, DataFormatError, DataNotFoundError

MNIST_SPLITS = ("train", "test")
_PREFIX = {"train": "train", "test": "t10k"}
_KINDS = {"images": ("idx3-ubyte", 3), "labels": ("idx1-ubyte", 1)}
_MD5 = dict(MNIST.resources)
MIRRORS: list[str] = list(MNIST.mirrors)
OFFICIAL_FILES: dict[str, dict[str, tuple[str, str]]] = {
    split: {
        kind: (name, _MD5[name])
        for kind, (suffix, _) in _KINDS.items()
        for name in [f"{_PREFIX[split]}-{kind}-{suffix}.gz"]
    }
    for split in MNIST_SPLITS
}
OFFICIAL_BYTES: dict[str, int] = {
    "train-images-idx3-ubyte.gz": 9_912_422, "train-labels-idx1-ubyte.gz": 28_881,
    "t10k-images-idx3-ubyte.gz": 1_648_877, "t10k-labels-idx1-ubyte.gz": 4_542,
}
IDX_UBYTE = 0x08
NOT_FOUND_FIX = (
    "set DAN_DATA (or data.root=PATH) to a folder holding mnist/, run `dan data download mnist`, "
    "or train on the synthetic set, which needs no files: `dan train quickstart`"
)


@dataclass(frozen=True)
class FileCheck:
    """One official file: where it was looked for, its expected and actual md5, and the verdict.

    ``status`` is ``"official"`` (md5 matches), ``"modified"`` (present, other md5) or ``"missing"``.
    """

    path: Path
    expected_md5: str
    actual_md5: str | None
    status: str


def mnist_dir(root: Path) -> Path:
    """``root/mnist``: the folder holding the idx files."""
    return Path(root) / "mnist"


def _check_split(split: str) -> None:
    if split not in MNIST_SPLITS:
        raise ConfigError(f"MNIST split {split!r} is unknown; valid base splits: {', '.join(MNIST_SPLITS)}")


def _find(folder: Path, split: str, kind: str) -> Path:
    gz_name = OFFICIAL_FILES[split][kind][0]
    candidates = [folder / gz_name, folder / gz_name.removesuffix(".gz")]
    for c in candidates:
        if c.is_file():
            return c
    raise DataNotFoundError(
        f"MNIST {split} {kind} not found: looked for {' or '.join(c.name for c in candidates)} in {folder}. "
        f"Fix: {NOT_FOUND_FIX}"
    )


def mnist_files(root: Path, split: str) -> list[Path]:
    """The ``[images, labels]`` files that :func:`load_mnist` reads for base split ``split``."""
    _check_split(split)
    folder = mnist_dir(root)
    return [_find(folder, split, kind) for kind in _KINDS]


def read_idx(path: Path, ndim: int) -> Tensor:
    """An idx file of unsigned bytes with ``ndim`` dimensions (gzip or raw) -> uint8 tensor of its shape.

    The header (magic number and ``ndim`` sizes) is checked before the body is touched: the body must be exactly as long as the header's
    shape says (for gzip, the size its trailer records must agree), and only that many bytes are ever read or
    decompressed, so a small file claiming or inflating to gigabytes is refused at once. Raises
    DataFormatError naming the file for a bad magic number, a bad gzip stream or a body that does not match.
    """
    path = regular_file(path, missing=f"idx file {path} does not exist; {NOT_FOUND_FIX}")
    gz = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            header = f.read(4 + 4 * ndim)
            dims = _idx_dims(path, header, ndim)
            body_bytes = math.prod(dims)
            stored = _gzip_isize(path) if gz else path.stat().st_size
            whole = len(header) + body_bytes
            if (whole % (1 << 32) if gz else whole) != stored:
                holds = (
                    f"the gzip trailer records {stored} bytes uncompressed (a cut or damaged download, or a body "
                    "longer than its shape)" if gz else f"it holds {stored} bytes"
                )
                raise DataFormatError(
                    f"{path}: truncated or corrupt idx file: header says shape {dims} ({whole} bytes with the "
                    f"header) but {holds}; delete it and download it again"
                )
            body = f.read(body_bytes)
            extra = f.read(1)
    except DataFormatError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a valid gzip file ({exc}); delete it and download it again") from None
    if len(body) != body_bytes or extra:
        found = "more" if extra else f"{len(body)}"
        raise DataFormatError(
            f"{path}: truncated or corrupt idx body (header says shape {dims}, {body_bytes} bytes; found {found}); "
            "delete it and download it again"
        )
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims) if body_bytes else torch.zeros(dims, dtype=torch.uint8)


def _idx_dims(path: Path, header: bytes, ndim: int) -> list[int]:
    expected_magic = (IDX_UBYTE << 8) | ndim
    if len(header) < 4 or int.from_bytes(header[:4], "big") != expected_magic:
        got = f"0x{int.from_bytes(header[:4], 'big'):08x}" if len(header) >= 4 else f"{len(header)} bytes"
        raise DataFormatError(
            f"{path}: bad magic number {got}, expected 0x{expected_magic:08x} (idx, unsigned bytes, {ndim}-d); "
            "this is not an MNIST-format file"
        )
    if len(header) < 4 + 4 * ndim:
        raise DataFormatError(f"{path}: truncated idx header ({len(header)} bytes); delete it and download it again")
    return [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]


def _gzip_isize(path: Path) -> int:
    """The uncompressed size (mod 2^32) a gzip file's trailer records."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() < 18:
            raise DataFormatError(f"{path}: not a valid gzip file (too short); delete it and download it again")
        f.seek(-4, 2)
        return int.from_bytes(f.read(4), "little")


def load_mnist(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """Base split ``train`` or ``test`` -> images uint8 ``[N, 28, 28]`` and labels int64 ``[N]``.

    Any valid MNIST-format files load, official or not. Raises DataNotFoundError when the files are
    missing and DataFormatError (naming the file) when they are corrupt or do not match each other.
    """
    image_file, label_file = mnist_files(root, split)
    images = read_idx(image_file, 3)
    labels = read_idx(label_file, 1).long()
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{image_file} holds {images.shape[0]} images but {label_file} holds {labels.shape[0]} labels; "
            "the two files must come from the same release"
        )
    if labels.numel() and int(labels.max()) > 9:
        raise DataFormatError(f"{label_file}: labels must be digits 0-9, found {int(labels.max())}")
    return images, labels


def verify_mnist(root: Path) -> list[FileCheck]:
    """Compare every official ``.gz`` file under ``root/mnist`` with its published md5."""
    checks = []
    for split in MNIST_SPLITS:
        for name, md5 in OFFICIAL_FILES[split].values():
            path = mnist_dir(root) / name
            actual = file_hash(path, "md5") if path.is_file() else None
            status = "missing" if actual is None else "official" if actual == md5 else "modified"
            checks.append(FileCheck(path, md5, actual, status))
    return checks


def download_mnist(
    root: Path,
    splits: tuple[str, ...] | list[str] = MNIST_SPLITS,
    mirrors: list[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download (or keep, when already verified) the official ``.gz`` files of ``splits`` into ``root/mnist``.

    Each file is tried on every mirror in turn and md5-checked; raises DownloadError when none delivers it.
    """
    mirrors = MIRRORS if mirrors is None else mirrors
    paths = []
    for split in splits:
        _check_split(split)
        for name, md5 in OFFICIAL_FILES[split].values():
            urls = [m.rstrip("/") + "/" + name for m in mirrors]
            paths.append(
                download_file(urls, mnist_dir(root) / name, md5=md5, progress=progress, size=OFFICIAL_BYTES[name])
            )
    return paths
