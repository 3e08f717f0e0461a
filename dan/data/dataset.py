"""The in-memory (or memory-mapped) form of one split of a multimodal dataset, and the dataset protocol.

A :class:`Split` keeps, per modality, a storage table of items and a row index per sample; a sample whose
row is ``-1`` lacks that modality. A batch is one gather per modality, no per-item Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Normaliser = Callable[[Tensor], Tensor]
MISSING = -1


@dataclass
class Split:
    """One split of a (multi)modal labelled dataset.

    Attributes:
        name: split name, e.g. ``"train"``.
        items: ``{m: [N_m, *shape_m]}`` storage per modality (a tensor, possibly backed by a memory-mapped
            file); already normalised unless ``normalisers[m]`` is given.
        rows: ``{m: [P] int64}`` row of ``items[m]`` for every sample; ``-1`` = the sample lacks ``m``.
        labels: ``[P]`` int64 class of each sample.
        manifest_hash: SHA-256 of what the split was built from, so a run can be rebuilt exactly.
        preprocessing: JSON-able ``{"modalities": {m: reader spec}, "classes": [...], ...}``; what
            :class:`dan.api.Preprocessing` applies to new inputs.
        source: the registered dataset name (``"synthetic"`` is reported as SYNTHETIC everywhere).
        info: free-form facts for ``dan data info`` (files, speakers, base split specs).
        normalisers: ``{m: fn}`` applied to each gathered batch ``[B, *shape_m]`` (raw storage such as uint8
            memory-mapped arrays is normalised per batch, so memory stays bounded).
        groups: ``[P]`` int64 group id per sample (speaker, writer) or None.
    """

    name: str
    items: dict[str, Tensor]
    rows: dict[str, Tensor]
    labels: Tensor
    manifest_hash: str
    preprocessing: dict[str, Any]
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    normalisers: dict[str, Normaliser] = field(default_factory=dict)
    groups: Tensor | None = None

    def __post_init__(self) -> None:
        if sorted(self.items) != sorted(self.rows):
            raise ValueError(f"split {self.name!r}: items {sorted(self.items)} and rows {sorted(self.rows)} differ")

    @classmethod
    def aligned(
        cls, name: str, items: Mapping[str, Tensor], labels: Tensor, **kwargs: Any
    ) -> Split:
        """A split whose sample ``i`` is row ``i`` of every modality (``items[m] [P, ...]``)."""
        n = int(labels.shape[0])
        return cls(name, dict(items), {m: torch.arange(n) for m in items}, labels, **kwargs)

    @property
    def modalities(self) -> list[str]:
        """The split's modalities, sorted."""
        return sorted(self.items)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        """Samples ``idx [B]`` -> ``{m: [B, *shape_m], f"{m}_mask": bool [B], "label": [B], "index": [B]}``.

        A missing modality's rows are zeros with mask False (the model masks them exactly)."""
        out: dict[str, Tensor] = {}
        for m in self.modalities:
            r = self.rows[m][idx]
            present = r >= 0
            x = self.items[m][r.clamp_min(0)]
            if m in self.normalisers:
                x = self.normalisers[m](x)
            if not bool(present.all()):
                x = x.masked_fill(~present.view(-1, *([1] * (x.dim() - 1))), 0)
            out[m] = x
            out[f"{m}_mask"] = present
        out["label"] = self.labels[idx]
        out["index"] = idx
        return out

    def select(self, idx: Tensor, name: str | None = None) -> Split:
        """The samples ``idx [K]`` as a split sharing this one's storage."""
        return replace(
            self,
            name=name or self.name,
            rows={m: r[idx] for m, r in self.rows.items()},
            labels=self.labels[idx],
            groups=None if self.groups is None else self.groups[idx],
        )

    def item_labels(self, m: str) -> Tensor:
        """``[N_m]`` label of each storage row of modality ``m`` (-1 for rows no sample uses)."""
        out = torch.full((self.items[m].shape[0],), MISSING, dtype=torch.long)
        r = self.rows[m]
        keep = r >= 0
        out[r[keep]] = self.labels[keep]
        return out

    def input_shape(self, m: str) -> list[int]:
        """Shape of one item of modality ``m`` (no batch dim)."""
        return list(self.items[m].shape[1:])


@runtime_checkable
class Dataset(Protocol):
    """What ``@register_dataset`` registers: a class built from the ``data.*`` config keys (cheap: it checks
    the config and reads no data), whose :meth:`build` reads the data."""

    def build(
        self, preprocessing: Mapping[str, Any] | None = None, only: Sequence[str] | None = None
    ) -> dict[str, Split]:
        """The splits (all, or those named in ``only``). With ``preprocessing`` (a checkpoint's), inputs are
        normalised with its stored statistics and nothing is fitted, so no training split is needed."""
        ...
