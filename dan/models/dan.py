"""``DANModel``: towers -> projection -> shared trunk (+ modality embedding) -> fusion -> head.

Each modality also gets an auxiliary linear classifier on its pooled trunk features, so a balancer
can weigh the modalities' own losses against the fused one (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dan.errors import ConfigError, DataFormatError
from dan.models.fusion import ConcatFusion, Fusion, SumFusion, pool
from dan.models.heads import build_head, linear_contributions
from dan.models.output import DANOutput
from dan.models.trunk import SharedTrunk

# lets torch.export / torch.compile return DANOutput (a pytree of tensors)
torch.export.register_dataclass(DANOutput, serialized_type_name="dan.models.output.DANOutput")


def _tracing() -> bool:
    """Whether we are inside torch.compile / torch.export / jit tracing (no data-dependent checks)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


class DANModel(nn.Module):
    """A multimodal classifier over a dict batch.

    Args:
        towers: one tower per modality, ``raw input -> [B, N_m, out_dim]`` (each exposes ``out_dim``);
            a tower whose ``out_dim`` differs from the trunk width gets a linear projection.
        trunk: the :class:`SharedTrunk`, built for the same modalities.
        fusion: a :class:`Fusion` built for the same modalities, ``-> [B, fusion.out_dim]``.
        num_classes: ``C``.
        head_hidden: 0 for a linear fused head (then ``contributions`` are given for ``concat``
            fusion), else the hidden width of a two-layer MLP head.
        head_dropout: dropout inside the MLP head.
        modality_dropout: probability (one for all, or per modality) of masking a present modality of a
            training sample; a sample never loses all its modalities.
        mid_fusion: a module exchanging information between the towers' stages (``mid_fusion(towers,
            {m: input}, present) -> {m: [B, N_m, out_dim]}``, e.g. :class:`~dan.models.mid_fusion.MMTM`), or
            ``None`` for towers that run independently.
    """

    def __init__(
        self,
        towers: Mapping[str, nn.Module],
        trunk: SharedTrunk,
        fusion: Fusion,
        num_classes: int,
        head_hidden: int = 0,
        head_dropout: float = 0.0,
        modality_dropout: float | Mapping[str, float] = 0.0,
        mid_fusion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        names = sorted(towers)
        if not names:
            raise ConfigError("model.towers is empty; configure at least one modality tower")
        for part, built in (("trunk", trunk.modalities), ("fusion", fusion.modalities)):
            if sorted(built) != names:
                raise ConfigError(
                    f"model.{part} was built for modalities {sorted(built)} but the towers are {names}; "
                    "build every part for the same modalities"
                )
        if int(num_classes) < 2:
            raise ConfigError(f"model.num_classes must be at least 2, got {num_classes}")
        self.dim = dim = trunk.dim
        self.num_classes = int(num_classes)
        self.towers = nn.ModuleDict({m: towers[m] for m in names})
        self.proj = nn.ModuleDict({m: self._projection(m, towers[m], dim) for m in names})
        self.trunk = trunk
        self.fusion = fusion
        self.head = build_head(fusion.out_dim, self.num_classes, head_hidden, head_dropout)
        self.aux_heads = nn.ModuleDict({m: nn.Linear(dim, self.num_classes) for m in names})
        self.modality_dropout = self._dropout_table(modality_dropout, names)
        self.mid_fusion = mid_fusion

    @staticmethod
    def _projection(m: str, tower: nn.Module, dim: int) -> nn.Module:
        out_dim = getattr(tower, "out_dim", None)
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ConfigError(
                f"tower of modality {m!r} ({type(tower).__name__}) has no int attribute out_dim; "
                "a tower must set self.out_dim to the width D of the tokens [B, N, D] it returns"
            )
        return nn.Identity() if out_dim == dim else nn.Linear(out_dim, dim)

    @staticmethod
    def _dropout_table(p: float | Mapping[str, float], names: list[str]) -> dict[str, float]:
        table = dict(p) if isinstance(p, Mapping) else dict.fromkeys(names, p)
        unknown = sorted(set(table) - set(names))
        if unknown:
            raise ConfigError(f"model.modality_dropout names unknown modalities {unknown}; valid: {names}")
        for m, value in table.items():
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"model.modality_dropout for {m!r} must be in [0, 1), got {value}")
        return {m: float(table.get(m, 0.0)) for m in names}

    @property
    def modalities(self) -> list[str]:
        """The model's modalities, sorted."""
        return list(self.towers)

    def tower_parameters(self, m: str) -> list[nn.Parameter]:
        """Parameters of modality ``m``'s tower and its projection (what OGM-GE modulates)."""
        if m not in self.towers:
            raise ConfigError(f"no tower for modality {m!r}; the model's modalities are {self.modalities}")
        return [*self.towers[m].parameters(), *self.proj[m].parameters()]

    def modality_parameters(self, m: str) -> list[nn.Parameter]:
        """Every parameter only modality ``m`` uses: its tower, projection and its part of the trunk."""
        return [*self.tower_parameters(m), *self.trunk.modality_parameters(m)]

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared trunk's last-layer parameters (GradNorm's ``W``)."""
        return self.trunk.last_layer_parameters()

    def presence(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{m: bool [B]}`` for the modalities in ``batch``, from ``batch[f"{m}_mask"]`` (all True where
        absent). Raises DataFormatError when no modality or a bad mask is given, or a sample has none."""
        names = [m for m in self.modalities if m in batch]
        if not names:
            raise DataFormatError(
                f"the batch (keys {sorted(batch)}) holds none of the model's modalities {self.modalities}; "
                "add at least one of them"
            )
        size = batch[names[0]].shape[0]
        present = {}
        for m in names:
            x, mask = batch[m], batch.get(f"{m}_mask")
            if x.shape[0] != size:
                raise DataFormatError(
                    f"batch[{names[0]!r}] has {size} samples but batch[{m!r}] has {x.shape[0]}; "
                    "every modality of a batch needs the same batch size"
                )
            if mask is None:
                present[m] = torch.ones(size, dtype=torch.bool, device=x.device)
                continue
            if mask.dim() != 1 or mask.shape[0] != size:
                raise DataFormatError(
                    f"batch['{m}_mask'] must be bool [B={size}], got shape {tuple(mask.shape)}"
                )
            present[m] = mask.to(device=x.device, dtype=torch.bool)
        if not _tracing():
            none = ~torch.stack(list(present.values()), dim=1).any(dim=1)
            if bool(none.any()):
                raise DataFormatError(
                    f"samples {none.nonzero().flatten().tolist()} have no modality present (every "
                    f"'<m>_mask' is False for {names}); each sample needs at least one modality"
                )
        return present

    def drop_modalities(self, present: dict[str, Tensor]) -> dict[str, Tensor]:
        """Modality dropout: mask each present ``m`` with probability ``p_m``; a sample that would lose
        all its modalities keeps one of them, chosen uniformly. ``{m: bool [B]}`` in and out."""
        names = list(present)
        mask = torch.stack([present[m] for m in names], dim=1)
        p = torch.tensor([self.modality_dropout[m] for m in names], device=mask.device)
        keep = mask & (torch.rand(mask.shape, device=mask.device) >= p)
        lost = ~keep.any(dim=1, keepdim=True)
        pick = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0).argmax(dim=1)
        rescue = F.one_hot(pick, len(names)).bool() & mask
        keep = torch.where(lost, rescue, keep)
        return {m: keep[:, k] for k, m in enumerate(names)}

    def forward(self, batch: Mapping[str, Tensor]) -> DANOutput:
        """``batch {m: input [B, ...], f"{m}_mask": bool [B], ...}`` -> :class:`DANOutput`.

        Keys without a tower (``label``, ...) are ignored; a modality key missing from the batch is absent
        for every sample.
        """
        present = self.presence(batch)
        if self.training and any(self.modality_dropout[m] > 0 for m in present):
            present = self.drop_modalities(present)
        if self.mid_fusion is not None:
            raw = self.mid_fusion(self.towers, {m: batch[m] for m in present}, present)
        else:
            raw = {m: self.towers[m](batch[m]) for m in present}
        tokens, embeddings, aux = {}, {}, {}
        for m in present:
            tok = self.trunk(self.proj[m](raw[m]), m)
            tokens[m] = tok
            embeddings[m] = pool(tok)
            aux[m] = self.aux_heads[m](embeddings[m])
        fused = self.fusion(tokens, present)
        return DANOutput(
            logits=self.head(fused),
            modality_logits=aux,
            embeddings=embeddings,
            fused=fused,
            contributions=self.contributions(fused, tokens, present),
            present=present,
        )

    def contributions(
        self, fused: Tensor, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> dict[str, Tensor] | None:
        """Each present modality's share of the fused logits, ``{m: [B, C]}``, summing to the logits, where
        the head is one ``nn.Linear``: over ``concat`` fusion (``fused [B, M*D]``) ``W_m φ_m + b/M``, over
        ``sum`` fusion ``W φ_m + b/M`` (``φ_m`` zero where absent); ``None`` for any other fusion or head."""
        if not isinstance(self.head, nn.Linear):
            return None
        if isinstance(self.fusion, ConcatFusion):
            slots = self.fusion.split(fused)
            parts = linear_contributions(self.head, [slots[m] for m in self.fusion.modalities])
            return {m: c for m, c in zip(self.fusion.modalities, parts, strict=True) if m in present}
        if isinstance(self.fusion, SumFusion):
            order = self.fusion.order(tokens)
            feats = self.fusion.present_pooled(tokens, present)[0]
            bias = self.head.bias / len(order) if self.head.bias is not None else 0.0
            return {m: feats[:, k] @ self.head.weight.T + bias for k, m in enumerate(order)}
        return None
