"""MNIST idx files: the official file table, loading any MNIST-format files, checking and downloading them.

Files live in ``<data root>/mnist/``, gzipped (``t10k-images-idx3-ubyte.gz``) or raw
(``t10k-images-idx3-ubyte``). Parsing is torchvision's idx reader; gzipped files are decompressed to a
temporary file, never into the (possibly read-only) data folder.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from dan.data.download import download_file, file_hash
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

    Raises DataFormatError naming the file for a bad magic number, a bad gzip stream or a body whose
    size does not match the header.
    """
    path = Path(path)
    if path.suffix != ".gz":
        return _parse_idx(path, path, ndim)
    with tempfile.TemporaryDirectory(prefix="dan-mnist-") as tmp:
        raw = Path(tmp) / path.stem
        try:
            with gzip.open(path, "rb") as src, open(raw, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(
                f"{path}: not a valid gzip file ({exc}); delete it and download it again"
            ) from None
        return _parse_idx(raw, path, ndim)


def _parse_idx(raw: Path, shown: Path, ndim: int) -> Tensor:
    with open(raw, "rb") as f:
        header = f.read(4 + 4 * ndim)
    expected_magic = (IDX_UBYTE << 8) | ndim
    if len(header) < 4 or int.from_bytes(header[:4], "big") != expected_magic:
        got = f"0x{int.from_bytes(header[:4], 'big'):08x}" if len(header) >= 4 else f"{len(header)} bytes"
        raise DataFormatError(
            f"{shown}: bad magic number {got}, expected 0x{expected_magic:08x} (idx, unsigned bytes, {ndim}-d); "
            "this is not an MNIST-format file"
        )
    dims = (
        [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        if len(header) == 4 + 4 * ndim
        else []
    )
    try:
        x = read_sn3_pascalvincent_tensor(str(raw), strict=True)
    except (AssertionError, RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise DataFormatError(
            f"{shown}: truncated or corrupt idx body (header says shape {dims or 'unreadable'}; {exc or type(exc).__name__}); "
            "delete it and download it again"
        ) from None
    return x


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
            paths.append(download_file(urls, mnist_dir(root) / name, md5=md5, progress=progress))
    return paths
