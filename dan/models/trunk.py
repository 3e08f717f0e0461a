"""The shared trunk: one body whose weights every modality uses, plus a learned modality embedding.

``TRUNKS`` holds body builders ``(dim, **kwargs) -> nn.Module`` mapping tokens ``[B, N, D] -> [B, N, D]``;
a body may expose ``last_layer() -> nn.Module`` (its final affine map, GradNorm's ``W``).
:class:`SharedTrunk` wraps one body (``share=True``) or one body per modality (``share=False``, to
measure what sharing buys) and adds the modality embedding before the body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.registry import Registry

TRUNKS: Registry[nn.Module] = Registry("trunks")


def _check_positive(trunk: str, **values: int) -> None:
    for key, value in values.items():
        if int(value) < 1:
            raise ConfigError(f"trunk {trunk!r}: {key} must be >= 1, got {value}; fix model.trunk.{key}")


class ResidualMLP(nn.Module):
    """Pre-norm residual MLP block: ``x + W2 drop(gelu(W1 LN(x)))``, ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D] -> [B, N, D]``."""
        return x + self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


@TRUNKS.register("mlp")
class MLPTrunk(nn.Module):
    """``depth`` token-wise residual MLP blocks: ``[B, N, D] -> [B, N, D]`` (hidden width ``hidden``,
    default ``2 * dim``)."""

    def __init__(self, dim: int, hidden: int | None = None, depth: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = 2 * dim if hidden is None else hidden
        _check_positive("mlp", depth=depth, hidden=hidden)
        self.blocks = nn.Sequential(*(ResidualMLP(dim, hidden, dropout) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D] -> [B, N, D]``."""
        return self.blocks(x)

    def last_layer(self) -> nn.Module:
        """The final ``Linear`` of the last block."""
        return self.blocks[-1].fc2


@TRUNKS.register("transformer")
class TransformerTrunk(nn.Module):
    """A small pre-norm ``nn.TransformerEncoder`` (self-attention within one modality's tokens):
    ``[B, N, D] -> [B, N, D]``."""

    def __init__(
        self, dim: int, depth: int = 2, heads: int = 4, hidden: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        hidden = 2 * dim if hidden is None else hidden
        _check_positive("transformer", depth=depth, heads=heads, hidden=hidden)
        if dim % heads:
            raise ConfigError(
                f"trunk 'transformer': model.dim={dim} is not divisible by heads={heads}; "
                "fix model.trunk.heads or model.dim"
            )
        layer = nn.TransformerEncoderLayer(
            dim, heads, hidden, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, D] -> [B, N, D]``."""
        return self.encoder(x)

    def last_layer(self) -> nn.Module:
        """The output ``Linear`` of the last encoder layer's feed-forward block."""
        return self.encoder.layers[-1].linear2


class SharedTrunk(nn.Module):
    """Modality embedding + body: ``(tokens [B, N, D], modality) -> [B, N, D]``.

    With ``share=True`` one body serves every modality (its weights receive every modality's gradient);
    with ``share=False`` each modality gets its own body, for ablations.
    """

    def __init__(
        self, modalities: Sequence[str], body: Callable[[], nn.Module], dim: int, share: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(share, bool):
            raise ConfigError(f"model.trunk.share must be true or false, got {share!r}")
        self.modalities = sorted(modalities)
        self.dim = dim
        self.share = share
        self.embedding = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in self.modalities})
        self.shared = body() if share else None
        self.per_modality = None if share else nn.ModuleDict({m: body() for m in self.modalities})

    def body(self, modality: str) -> nn.Module:
        """The body that processes ``modality`` (the same module for all when shared)."""
        if self.shared is not None:
            return self.shared
        assert self.per_modality is not None
        return self.per_modality[modality]

    def forward(self, tokens: Tensor, modality: str) -> Tensor:
        """``tokens [B, N, D]`` of ``modality`` -> ``[B, N, D]``."""
        return self.body(modality)(tokens + self.embedding[modality])

    def modality_parameters(self, modality: str) -> list[nn.Parameter]:
        """The parameters only ``modality`` uses: its embedding, and its body where bodies are not shared."""
        own = [self.embedding[modality]]
        return own if self.shared is not None else [*own, *self.body(modality).parameters()]

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters of the body's last layer (of every body when unshared); GradNorm's ``W``.

        A plugin body without ``last_layer()`` contributes all its parameters.
        """
        bodies = [self.shared] if self.shared is not None else list(self.per_modality.values())
        params: list[nn.Parameter] = []
        for b in bodies:
            layer = b.last_layer() if hasattr(b, "last_layer") else b
            params.extend(layer.parameters())
        return params


def build_trunk(
    name: str, modalities: Sequence[str], dim: int, /, share: bool = True, **kwargs: Any
) -> SharedTrunk:
    """A :class:`SharedTrunk` around the ``TRUNKS`` body ``name`` built with ``(dim=dim, **kwargs)``.

    Unknown names and bad kwargs raise ConfigError.
    """
    if "dim" in kwargs:
        raise ConfigError("model.trunk.dim is not a trunk option: the trunk width is model.dim")
    TRUNKS.check_kwargs(name, kwargs, "model.trunk", reserved=("dim",))
    return SharedTrunk(modalities, lambda: TRUNKS.build(name, dim=dim, **kwargs), dim, share=share)
