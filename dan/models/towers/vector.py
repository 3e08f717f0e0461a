"""Vector tower: feature vectors (table columns, ``.npy`` embeddings) ``[B, F]`` -> tokens ``[B, groups, dim]``."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from dan.errors import ConfigError
from dan.models.towers.registry import check_input, register_tower


@register_tower("vector_mlp")
class VectorMLP(nn.Module):
    """A two-layer MLP over a flat feature vector: ``[B, features]`` (or ``[B, *shape]`` with
    ``prod(shape) = features``, flattened) -> ``groups`` tokens ``[B, groups, dim]``."""

    def __init__(self, features: int, dim: int = 64, hidden: int = 128, groups: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        for key, value in (("features", features), ("hidden", hidden), ("groups", groups)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"tower 'vector_mlp': {key} must be a positive int, got {value!r}; fix model.towers.<m>.{key}")
        self.features, self.groups, self.out_dim = features, groups, dim
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, groups * dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, features]`` -> tokens ``[B, groups, dim]``."""
        x = x.flatten(1) if x.dim() > 2 else x
        check_input("vector_mlp", x, "[B, features]", 2, [(1, self.features)])
        return rearrange(self.net(x), "b (g d) -> b g d", g=self.groups)
