"""``dan verify CHECKPOINT A B [--json]``: do two inputs match? The distance of their embeddings (or 1 -
P(same) of a pair classifier) against the threshold chosen on validation and stored in the checkpoint.

A Siamese checkpoint compares two inputs of its modality (two images, or two recordings); a cross-modal
checkpoint compares one image with one recording, in either order.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dan.data.folder import AUDIO_SUFFIXES
from dan.data.images import IMAGE_SUFFIXES
from dan.data.readers import file_kind
from dan.engine.checkpoint import load_checkpoint, load_model_state
from dan.errors import CheckpointError, DataFormatError


@dataclass
class MetricCheckpoint:
    """A trained Siamese / pair-classifier / cross-modal model with its threshold and preprocessing."""

    model: nn.Module
    kind: str
    modalities: list[str]
    threshold: float
    preprocessing: Any
    path: Path


def load_metric_checkpoint(path: str | Path) -> MetricCheckpoint:
    """A ``best.pt`` of a finished siamese or crossmodal run -> :class:`MetricCheckpoint` (eval mode).

    Raises CheckpointError when the file is not such a checkpoint or holds no verification threshold.
    """
    from dan.api import Preprocessing
    from dan.models.siamese import build_metric_model

    path = Path(path)
    state = load_checkpoint(path)
    meta = state.get("metric_model")
    if not isinstance(meta, dict):
        recipe = (state.get("config") or {}).get("recipe", "?")
        raise CheckpointError(
            f"{path}: trained by recipe {recipe!r}, not a Siamese or cross-modal model; dan verify needs a "
            "checkpoint of the siamese or crossmodal recipe (dan predict serves classifiers)"
        )
    verification = state.get("verification")
    if not isinstance(verification, dict):
        raise CheckpointError(
            f"{path}: holds no verification threshold (it is saved when training finishes, into best.pt); "
            "pass the best.pt of a finished run"
        )
    model = build_metric_model(meta["kind"], state["config"]["model"], meta["input_shapes"])
    load_model_state(model, state["model"], source=str(path))
    return MetricCheckpoint(
        model.eval(),
        meta["kind"],
        sorted(meta["input_shapes"]),
        float(verification["threshold"]),
        Preprocessing(state.get("preprocessing") or {}),
        path,
    )


def modality_of(path: Path) -> str:
    """``image`` or ``audio`` from the file suffix; DataFormatError naming the file otherwise."""
    kind = file_kind(path)
    if kind is not None:
        return kind
    raise DataFormatError(
        f"{path}: unknown input type {path.suffix.lower() or '(no suffix)'}; give an image ({', '.join(IMAGE_SUFFIXES)}) "
        f"or a recording ({', '.join(AUDIO_SUFFIXES)})"
    )


def _check_modalities(ck: MetricCheckpoint, a: Path, b: Path) -> tuple[str, str]:
    ma, mb = modality_of(a), modality_of(b)
    word = {"image": "an image", "audio": "a recording"}
    if ck.kind == "crossmodal":
        if ma == mb:
            raise DataFormatError(
                f"{b} is {word[mb]} like {a}, but the cross-modal model {ck.path} compares one image with one "
                "recording; give one of each"
            )
        return ma, mb
    (expected,) = ck.modalities
    for p, m in ((a, ma), (b, mb)):
        if m != expected:
            raise DataFormatError(
                f"{p} is {word[m]}, but the Siamese model {ck.path} expects two {expected} inputs "
                f"({'images' if expected == 'image' else 'recordings'}); give two files of that kind"
            )
    return ma, mb


@torch.no_grad()
def verify_files(ck: MetricCheckpoint, a: str | Path, b: str | Path) -> dict[str, Any]:
    """Distance of files ``a`` and ``b`` under ``ck``, the threshold and the verdict (distance <= threshold)."""
    a, b = Path(a), Path(b)
    ma, mb = _check_modalities(ck, a, b)
    read = {"image": ck.preprocessing.image_file, "audio": ck.preprocessing.audio_file}
    xa, xb = read[ma](a), read[mb](b)
    if ck.kind == "crossmodal":
        d = ck.model.distance(ma, xa, mb, xb)
    else:
        d = ck.model.distance(xa, xb)
    distance = float(d[0])
    return {
        "a": str(a),
        "b": str(b),
        "modalities": [ma, mb],
        "distance": distance,
        "threshold": ck.threshold,
        "same": distance <= ck.threshold,
        "model": ck.kind,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CHECKPOINT A B``, ``--json``."""
    parser.add_argument("checkpoint", help="best.pt of a finished siamese or crossmodal run")
    parser.add_argument("a", help="an image or a WAV recording")
    parser.add_argument("b", help="an image or a WAV recording (one of each for a cross-modal model)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    """Load, compare, print the distance, the threshold and the verdict."""
    result = verify_files(load_metric_checkpoint(args.checkpoint), args.a, args.b)
    if args.json:
        print(json.dumps(result))
        return 0
    verdict = "SAME (match)" if result["same"] else "DIFFERENT (no match)"
    print(f"distance {result['distance']:.4f}  threshold {result['threshold']:.4f}  verdict: {verdict}")
    return 0
