"""FSDD recordings alone, as the registered ``fsdd`` dataset: speaker-disjoint train/val/test splits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dan.data.dataset import Split
from dan.data.features import FeatureConfig, compute_features, pad_or_trim
from dan.data.labelled import labelled_splits
from dan.data.registry import register_dataset
from dan.errors import ConfigError
from dan.paths import data_root


@register_dataset("fsdd")
@dataclass
class FsddDataset:
    """``val_speakers`` and ``test_speakers`` (required, disjoint) are held out; every other speaker trains.
    ``audio``: feature keys (:class:`dan.data.features.FeatureConfig`); ``on_bad_file``: raise or skip."""

    root: str | None = None
    val_speakers: list[str] | None = None
    test_speakers: list[str] | None = None
    audio: Any = None
    on_bad_file: str = "raise"

    def __post_init__(self) -> None:
        self.features = FeatureConfig.from_config(self.audio)
        if set(self.val_speakers or []) & set(self.test_speakers or []):
            raise ConfigError("data.val_speakers and data.test_speakers overlap; a speaker belongs to one split")

    def input_shapes(self) -> dict[str, list[int]]:
        """``{m: item shape}`` of the built splits, known without reading data."""
        return {"audio": self.features.shape}

    def verify(self) -> list[Any]:
        """Every recording opened and read (``dan data verify fsdd``)."""
        from dan.data.verify import verify_fsdd_files

        return verify_fsdd_files(data_root(self.root))

    def build(self, preprocessing: Mapping[str, Any] | None = None, only: Sequence[str] | None = None) -> dict[str, Split]:
        from dan.data import fsdd

        recs = fsdd.index_recordings(fsdd.fsdd_dir(data_root(self.root)))
        speakers = sorted({r.speaker for r in recs})
        held = {"val": list(self.val_speakers or []), "test": list(self.test_speakers or [])}
        for split, names in held.items():
            unknown = [s for s in names if s not in speakers]
            if unknown or not names:
                raise ConfigError(
                    f"data.{split}_speakers={names} must name speakers of the data; speakers found: {', '.join(speakers)}"
                )
        waves, kept = fsdd.load_waveforms(
            recs, self.features.sample_rate, on_error=self.on_bad_file, max_seconds=self.features.duration_s
        )
        feats = compute_features(pad_or_trim(waves, self.features.num_samples), self.features)
        split_of = {s: k for k, names in held.items() for s in names}
        which = [split_of.get(r.speaker, "train") for r in kept]
        items, labels = {}, {}
        for k in ("train", "val", "test"):
            if only is not None and k not in only and not (preprocessing is None and k == "train"):
                continue
            idx = torch.tensor([i for i, w in enumerate(which) if w == k], dtype=torch.long)
            if len(idx) == 0:
                raise ConfigError(f"no recordings left for the {k} split; hold out fewer speakers")
            items[k], labels[k] = feats[idx], torch.tensor([kept[i].digit for i in idx.tolist()])
        config = {"root": self.root, "val_speakers": self.val_speakers, "test_speakers": self.test_speakers, "audio": self.features.to_dict()}
        splits = labelled_splits("fsdd", "audio", items, labels, [str(d) for d in range(10)], config, preprocessing, self.features)
        return {k: v for k, v in splits.items() if only is None or k in only}
