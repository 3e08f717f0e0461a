"""A user's folder tree of ``class_name/*.png|jpg|wav``, as in face or signature verification."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dan.data.dataset import Split
from dan.data.features import FeatureConfig, compute_features, pad_or_trim
from dan.data.fsdd import read_wav
from dan.data.images import IMAGE_SUFFIXES, read_image
from dan.data.labelled import labelled_splits
from dan.data.pairing import split_generator
from dan.data.registry import register_dataset
from dan.errors import ConfigError, DataFormatError, DataNotFoundError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
ON_ERROR = ("raise", "skip")


@dataclass
class FolderSet:
    """Items of a folder tree: ``items [N, 1, H, W]`` (images or audio features), ``labels [N]`` int64."""

    items: Tensor
    labels: Tensor
    classes: list[str]
    files: list[Path]
    modality: str


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    except (RuntimeError, OSError):  # a symlink loop leads nowhere: the reader names it (or skips it)
        return True
    return True


def load_folder_tree(
    root: Path,
    modality: str = "image",
    on_error: str = "raise",
    image_size: int = 28,
    audio: FeatureConfig | None = None,
) -> FolderSet:
    """Read every ``root/<class>/<file>`` of the modality's suffixes; classes are the sorted folder names.

    Files or folders whose real path lies outside ``root`` (symlinks, ``..``) are refused. Unreadable files
    raise DataFormatError naming them, and a class folder without files raises DataNotFoundError naming it;
    with ``on_error="skip"`` both are skipped with one counted warning (labels stay contiguous).
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"data.on_bad_file={on_error!r} is unknown; valid: {', '.join(ON_ERROR)}")
    suffixes = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}.get(modality)
    if suffixes is None:
        raise ConfigError(f"data.modality={modality!r} is unknown; valid: image, audio")
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(
            f"folder dataset {root} does not exist; point data.root at a folder of class_name/ folders"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[tuple[Path, int]] = []
    empty: list[Path] = []
    for label, name in enumerate(classes):
        class_dir = root / name
        if not _inside(root, class_dir):
            raise DataFormatError(
                f"{class_dir} points outside {root}; folder datasets may not escape their root"
            )
        found = [f for f in sorted(class_dir.iterdir()) if f.suffix.lower() in suffixes]
        for f in found:
            if not _inside(root, f):
                raise DataFormatError(f"{f} points outside {root}; folder datasets may not escape their root")
            files.append((f, label))
        if not found:
            empty.append(class_dir)
    if not files:
        raise DataNotFoundError(
            f"folder dataset {root} holds no {modality} files ({', '.join(suffixes)}) in class sub-folders; "
            "lay it out as root/<class_name>/<file>"
        )
    if empty and on_error == "raise":
        raise DataNotFoundError(
            f"class folder {empty[0]} holds no {modality} files ({', '.join(suffixes)}); add files, remove the "
            "folder, or set data.on_bad_file=skip to drop empty classes"
        )
    cfg = audio or FeatureConfig()
    items, labels, kept, bad = [], [], [], []
    for f, label in files:
        try:
            items.append(read_image(f, image_size) if modality == "image" else read_wav(f, cfg.sample_rate, cfg.duration_s))
        except (DataFormatError, DataNotFoundError):
            if on_error == "raise":
                raise
            bad.append(f)
            continue
        labels.append(label)
        kept.append(f)
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable file(s) in {root}: {', '.join(str(b) for b in bad[:5])}",
            stacklevel=2,
        )
    if not items:
        raise DataNotFoundError(f"folder dataset {root}: every file was unreadable")
    # classes left without a readable file are dropped, so labels stay 0..C-1
    present = sorted(set(labels))
    if len(present) < len(classes):
        dropped = [classes[c] for c in range(len(classes)) if c not in set(present)]
        warnings.warn(
            f"dropped {len(dropped)} class(es) of {root} without readable files: {', '.join(dropped)}",
            stacklevel=2,
        )
    relabel = {c: i for i, c in enumerate(present)}
    stacked = (
        torch.stack(items)
        if modality == "image"
        else compute_features(pad_or_trim(items, cfg.num_samples), cfg)
    )
    return FolderSet(
        stacked, torch.tensor([relabel[c] for c in labels]), [classes[c] for c in present], kept, modality
    )


@register_dataset("folder")
@dataclass
class FolderDataset:
    """A tree ``root/<class_name>/<file>`` of one modality (``image`` or ``audio``), split per class by
    ``val_fraction`` and ``test_fraction`` (seeded by ``seed``)."""

    root: str | None = None
    modality: str = "image"
    on_bad_file: str = "raise"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    image_size: int = 28
    audio: Any = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.root in (None, "", "???"):
            raise ConfigError("data.root is required for data.name=folder: a folder of class_name/ sub-folders")
        if self.modality not in ("image", "audio"):
            raise ConfigError(f"data.modality={self.modality!r} is unknown; valid: image, audio")
        fractions = (self.val_fraction, self.test_fraction)
        if any(not 0.0 < float(f) < 1.0 for f in fractions) or sum(fractions) >= 1.0:
            raise ConfigError(
                "data.val_fraction and data.test_fraction must lie in (0, 1) and sum below 1, got "
                f"{self.val_fraction}, {self.test_fraction}"
            )
        self.features = FeatureConfig.from_config(self.audio)

    def input_shapes(self) -> dict[str, list[int]]:
        """``{m: item shape}`` of the built splits, known without reading data."""
        if self.modality == "image":
            return {"image": [1, self.image_size, self.image_size]}
        return {"audio": self.features.shape}

    def build(self, preprocessing: Mapping[str, Any] | None = None, only: Sequence[str] | None = None) -> dict[str, Split]:
        fs = load_folder_tree(Path(str(self.root)), self.modality, self.on_bad_file, self.image_size, self.features)
        g = split_generator(self.seed, "folder")
        chosen: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for c in range(len(fs.classes)):  # stratified: every class is split by the same fractions
            idx = (fs.labels == c).nonzero().squeeze(1)
            idx = idx[torch.randperm(len(idx), generator=g)].tolist()
            n_val, n_test = round(len(idx) * self.val_fraction), round(len(idx) * self.test_fraction)
            chosen["val"] += idx[:n_val]
            chosen["test"] += idx[n_val : n_val + n_test]
            chosen["train"] += idx[n_val + n_test :]
        keep = [k for k in chosen if only is None or k in only or (preprocessing is None and k == "train")]
        index = {k: torch.tensor(sorted(chosen[k]), dtype=torch.long) for k in keep}
        config = {"root": str(self.root), "modality": self.modality, "size": self.image_size, "seed": self.seed}
        splits = labelled_splits(
            "folder", self.modality, {k: fs.items[v] for k, v in index.items()},
            {k: fs.labels[v] for k, v in index.items()}, fs.classes, config, preprocessing, self.features,
        )
        return {k: v for k, v in splits.items() if only is None or k in only}
