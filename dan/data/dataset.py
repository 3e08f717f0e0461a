"""The in-memory form of a paired audio-visual split: whole tensors, indexed by a pair table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class AVSplit:
    """One split of a paired image/audio dataset.

    Attributes:
        name: split name, e.g. ``"train"``.
        images: ``[N_i, 1, 28, 28]`` float32, normalised.
        audio: ``[N_a, 1, F, T]`` float32 standardised features.
        pairs: ``[P, 2]`` int64: (row of ``images``, row of ``audio``) per sample.
        labels: ``[P]`` int64 class of each pair (both items share it).
        manifest_hash: SHA-256 of the pair manifest, so a run can be rebuilt exactly.
        preprocessing: JSON-able description of the normalisation and audio front end.
        source: ``"avmnist"`` or ``"synthetic"``; shown wherever the data is reported.
        info: free-form facts for ``dan data info`` (files, speakers, base split specs).
    """

    name: str
    images: Tensor
    audio: Tensor
    pairs: Tensor
    labels: Tensor
    manifest_hash: str
    preprocessing: dict[str, Any]
    source: str = "avmnist"
    info: dict[str, Any] = field(default_factory=dict)

    modalities: tuple[str, ...] = ("audio", "image")

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        """Gather samples ``idx`` ``[B]`` into ``{"image": [B,1,28,28], "audio": [B,1,F,T], "label": [B], "index": [B]}``."""
        rows = self.pairs[idx]
        return {
            "image": self.images[rows[:, 0]],
            "audio": self.audio[rows[:, 1]],
            "label": self.labels[idx],
            "index": idx,
        }
