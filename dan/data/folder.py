"""A user's folder tree of ``class_name/*.png|jpg|wav``, as in face or signature verification."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dan.data.features import FeatureConfig, compute_features, pad_or_trim
from dan.data.fsdd import read_wav
from dan.data.images import IMAGE_SUFFIXES, read_image
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
            items.append(read_image(f, image_size) if modality == "image" else read_wav(f, cfg.sample_rate))
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
