"""Fusion: per-modality token sets -> one vector per sample.

Every fusion is built as ``Fusion(modalities, dim, **options)`` and called as
``fusion(tokens, present) -> fused [B, out_dim]`` with ``tokens: {m: [B, N_m, D]}`` (only the
modalities in the batch) and ``present: {m: bool [B]}`` (True where the sample has m; a modality
without an entry is present for every sample). Modalities are always visited in sorted order.

Masking is exact: a sample whose modality m is masked out gets the same output as if m were absent
from the batch altogether, because absent values only ever enter through ``torch.where`` (never
multiplied by zero, so even non-finite filler cannot leak).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from einops import reduce
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.registry import Registry

FUSIONS: Registry[nn.Module] = Registry("fusions")


def pool(tokens: Tensor) -> Tensor:
    """Mean over tokens: ``[B, N, D] -> [B, D]``."""
    return reduce(tokens, "b n d -> b d", "mean")


class Fusion(nn.Module):
    """Base class: sorted ``modalities``, token width ``dim``, output width ``out_dim``."""

    out_dim: int

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__()
        if not modalities:
            raise ConfigError("fusion needs at least one modality; add one under model.towers")
        self.modalities = sorted(modalities)
        self.dim = dim

    def order(self, tokens: Mapping[str, Tensor]) -> list[str]:
        """The modalities of ``tokens`` in sorted order; ConfigError for one the fusion was not built for."""
        unknown = sorted(set(tokens) - set(self.modalities))
        if unknown:
            raise ConfigError(
                f"fusion {type(self).__name__} was built for modalities {self.modalities}, got tokens for "
                f"{unknown}; add them under model.towers"
            )
        if not tokens:
            raise ConfigError(f"fusion got no modality; the batch needs one of {self.modalities}")
        return [m for m in self.modalities if m in tokens]

    @staticmethod
    def mask(present: Mapping[str, Tensor], m: str, like: Tensor) -> Tensor:
        """``present[m]`` as bool ``[B]`` (all True when not given); ``like`` is any ``[B, ...]`` tensor."""
        if m in present:
            return present[m]
        return torch.ones(like.shape[0], dtype=torch.bool, device=like.device)

    def pooled(self, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Stacked pooled features ``[B, K, D]`` and presence ``bool [B, K]`` of the K modalities in
        ``tokens`` (sorted)."""
        order = self.order(tokens)
        feats = torch.stack([pool(tokens[m]) for m in order], dim=1)
        mask = torch.stack([self.mask(present, m, tokens[m]) for m in order], dim=1)
        return feats, mask

    def present_pooled(self, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """:meth:`pooled` with absent entries set to zero: ``[B, K, D]`` and ``bool [B, K]``."""
        feats, mask = self.pooled(tokens, present)
        return torch.where(mask.unsqueeze(-1), feats, torch.zeros_like(feats)), mask


def masked_mean(feats: Tensor, mask: Tensor) -> Tensor:
    """Mean over present entries: ``feats [B, K, D]``, ``mask bool [B, K]`` -> ``[B, D]``."""
    total = torch.where(mask.unsqueeze(-1), feats, torch.zeros_like(feats)).sum(dim=1)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(feats.dtype)
    return total / count


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Mean-pooled features of every modality, concatenated in sorted order: ``out_dim = M * D``.

    A modality absent for a sample (masked, or missing from the batch) fills its slot with a learned
    per-modality "missing" embedding rather than zeros, so the head can tell "absent" from a genuine
    all-zero feature and learns what to predict without it.
    """

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__(modalities, dim)
        self.out_dim = len(self.modalities) * dim
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in self.modalities})

    def forward(self, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """``{m: [B, N_m, D]}``, ``{m: bool [B]}`` -> ``[B, M * D]``."""
        order = self.order(tokens)
        ref = tokens[order[0]]
        slots = []
        for m in self.modalities:
            missing = self.missing[m].to(ref.dtype).expand(ref.shape[0], -1)
            if m in tokens:
                slots.append(torch.where(self.mask(present, m, ref).unsqueeze(-1), pool(tokens[m]), missing))
            else:
                slots.append(missing)
        return torch.cat(slots, dim=-1)

    def split(self, fused: Tensor) -> dict[str, Tensor]:
        """Inverse of the concatenation: ``[B, M * D] -> {m: [B, D]}``."""
        return dict(zip(self.modalities, fused.split(self.dim, dim=-1), strict=True))


@FUSIONS.register("sum")
class SumFusion(Fusion):
    """Sum of the present modalities' mean-pooled features: ``out_dim = D``."""

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__(modalities, dim)
        self.out_dim = dim

    def forward(self, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """``{m: [B, N_m, D]}``, ``{m: bool [B]}`` -> ``[B, D]``."""
        return self.present_pooled(tokens, present)[0].sum(dim=1)


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """Per-sample softmax gates over the present modalities: ``Σ_m g_m φ_m`` with
    ``g = softmax_m(w_m·φ_m + c_m)`` (absent modalities get gate 0): ``out_dim = D``."""

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__(modalities, dim)
        self.out_dim = dim
        self.gates = nn.ModuleDict({m: nn.Linear(dim, 1) for m in self.modalities})

    def gate_weights(self, feats: Tensor, mask: Tensor, order: Sequence[str]) -> Tensor:
        """Gates ``[B, K]`` from pooled ``feats [B, K, D]`` of ``order`` and ``mask bool [B, K]``;
        rows sum to 1, absent entries are exactly 0."""
        logits = torch.cat([self.gates[m](feats[:, k]) for k, m in enumerate(order)], dim=1)
        return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)

    def forward(self, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """``{m: [B, N_m, D]}``, ``{m: bool [B]}`` -> ``[B, D]``."""
        feats, mask = self.present_pooled(tokens, present)
        gates = self.gate_weights(feats, mask, self.order(tokens))
        return (gates.unsqueeze(-1) * feats).sum(dim=1)


@FUSIONS.register("film")
class FiLMFusion(Fusion):
    """FiLM across modalities: each modality's pooled features ``φ_m`` are modulated by the others,
    ``h_m = (1 + Δγ_m(c_m)) ⊙ φ_m + β_m(c_m)`` with context ``c_m`` the mean of the other present
    modalities' features, then averaged over the present modalities: ``out_dim = D``.

    With two modalities each conditions the other; with no other modality present, ``h_m = φ_m``.
    The modulators start at the identity (zero-initialised).
    """

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__(modalities, dim)
        self.out_dim = dim
        self.film = nn.ModuleDict({m: nn.Linear(dim, 2 * dim) for m in self.modalities})
        for layer in self.film.values():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """``{m: [B, N_m, D]}``, ``{m: bool [B]}`` -> ``[B, D]``."""
        feats, mask = self.pooled(tokens, present)
        order = self.order(tokens)
        out = []
        for k, m in enumerate(order):
            others = [j for j in range(len(order)) if j != k]
            phi = feats[:, k]
            if not others:
                out.append(phi)
                continue
            ctx = masked_mean(feats[:, others], mask[:, others])
            has_ctx = mask[:, others].any(dim=1, keepdim=True)
            delta = torch.where(has_ctx, self.film[m](ctx), torch.zeros_like(ctx).repeat(1, 2))
            gamma, beta = delta.chunk(2, dim=-1)
            out.append((1 + gamma) * phi + beta)
        return masked_mean(torch.stack(out, dim=1), mask)


@FUSIONS.register("attention")
class AttentionFusion(Fusion):
    """Cross-modal attention: each modality's tokens attend (its own ``nn.MultiheadAttention``) to the
    tokens of the other modalities, with ``key_padding_mask`` hiding samples where those are absent;
    ``h_m = LN_m(x_m + attn)`` is mean-pooled and averaged over the present modalities:
    ``out_dim = D``. Where no other modality is present the attention term is dropped, leaving the
    modality's own pooled ``LN_m(x_m)`` (self-pooling).
    """

    def __init__(self, modalities: Sequence[str], dim: int, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim)
        if heads < 1 or dim % heads:
            raise ConfigError(
                f"fusion 'attention': model.dim={dim} must be divisible by heads={heads}; fix model.fusion.heads"
            )
        self.out_dim = dim
        self.attn = nn.ModuleDict(
            {m: nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) for m in self.modalities}
        )
        self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})

    def forward(self, tokens: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        """``{m: [B, N_m, D]}``, ``{m: bool [B]}`` -> ``[B, D]``."""
        order = self.order(tokens)
        masks = {m: self.mask(present, m, tokens[m]) for m in order}
        # absent samples' tokens become zeros: a zero attention weight times a NaN value would still be NaN
        tokens = {
            m: torch.where(masks[m][:, None, None], tokens[m], torch.zeros_like(tokens[m])) for m in order
        }
        pooled = []
        for m in order:
            q = tokens[m]
            others = [j for j in order if j != m]
            if others:
                kv = torch.cat([tokens[j] for j in others], dim=1)
                hidden = torch.cat(
                    [(~masks[j]).unsqueeze(1).expand(-1, tokens[j].shape[1]) for j in others], dim=1
                )
                has_other = torch.stack([masks[j] for j in others], dim=1).any(dim=1)
                # rows with nothing to attend to are unmasked (avoids NaN) and their result discarded
                attended, _ = self.attn[m](
                    q, kv, kv, key_padding_mask=hidden & has_other.unsqueeze(1), need_weights=False
                )
                q = q + torch.where(has_other[:, None, None], attended, torch.zeros_like(attended))
            pooled.append(pool(self.norm[m](q)))
        mask = torch.stack([masks[m] for m in order], dim=1)
        return masked_mean(torch.stack(pooled, dim=1), mask)


def build_fusion(name: str, modalities: Sequence[str], dim: int, /, **kwargs: Any) -> Fusion:
    """The ``FUSIONS`` entry ``name`` built for ``modalities`` at width ``dim``; ConfigError on bad
    names or kwargs."""
    for key in ("modalities", "dim"):
        if key in kwargs:
            raise ConfigError(f"model.fusion.{key} is set by the model; remove it from the fusion config")
    FUSIONS.check_kwargs(name, kwargs, "model.fusion", reserved=("modalities", "dim"))
    return FUSIONS.build(name, modalities=modalities, dim=dim, **kwargs)
