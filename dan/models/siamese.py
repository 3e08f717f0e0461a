"""Siamese and cross-modal two-tower models built from dan's towers.

A :class:`SiameseNetwork` holds ONE tower and calls it once per input, so the two branches share weights
by construction. :class:`PairClassifier` scores ``|f1 - f2|`` with a small head (pair-BCE).
:class:`CrossModalTwoTower` maps each modality through its own tower (and optionally one shared trunk)
into one L2-normalised embedding space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from dan.errors import ConfigError

EMBED_HEADS = ("linear", "mlp")
POOLS = ("flatten", "mean")
SIAMESE_KEYS = ("dim", "tower", "embed_dim", "head", "pool", "pair_hidden")
CROSSMODAL_KEYS = ("dim", "towers", "trunk", "embed_dim", "head", "pool")
METRIC_MODEL_KINDS = ("siamese", "pair_classifier", "crossmodal")


def probe_tokens(tower: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """The token count ``N`` and width ``D`` a tower produces for one input of ``input_shape`` (no batch dim)."""
    was_training = tower.training
    tower.eval()
    with torch.no_grad():
        tokens = tower(torch.zeros(2, *input_shape))
    tower.train(was_training)
    if tokens.dim() != 3:
        raise ConfigError(
            f"tower {type(tower).__name__} returned shape {tuple(tokens.shape)}; towers must return [B, N, D]"
        )
    return int(tokens.shape[1]), int(tokens.shape[2])


def pool_tokens(tokens: Tensor, pool: str) -> Tensor:
    """``[B, N, D]`` -> ``[B, N*D]`` (``flatten``: keeps where each token is) or ``[B, D]`` (``mean``)."""
    if pool == "flatten":
        return rearrange(tokens, "b n d -> b (n d)")
    return reduce(tokens, "b n d -> b d", "mean")


def _pooled_dim(n: int, d: int, pool: str) -> int:
    if pool not in POOLS:
        raise ConfigError(f"model.pool={pool!r} is unknown; valid: {', '.join(POOLS)}")
    return n * d if pool == "flatten" else d


def embedding_head(kind: str, dim_in: int, dim_out: int, max_hidden: int = 256) -> nn.Module:
    """``linear`` or ``mlp`` (hidden width ``min(dim_in, max_hidden)``) projection ``[B, dim_in] -> [B, dim_out]``."""
    if kind == "linear":
        return nn.Linear(dim_in, dim_out)
    if kind == "mlp":
        hidden = min(dim_in, max_hidden)
        return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out))
    raise ConfigError(f"model.head={kind!r} is unknown; valid: {', '.join(EMBED_HEADS)}")


class SiameseNetwork(nn.Module):
    """One tower, pooled (``flatten`` or ``mean`` over tokens), projected and L2-normalised:
    ``x [B, ...] -> embedding [B, embed_dim]``."""

    def __init__(
        self,
        tower: nn.Module,
        input_shape: Sequence[int],
        embed_dim: int = 64,
        head: str = "mlp",
        pool: str = "mean",
    ) -> None:
        super().__init__()
        self.tower = tower
        self.input_shape = tuple(input_shape)
        self.pool = pool
        self.head = embedding_head(head, _pooled_dim(*probe_tokens(tower, input_shape), pool), embed_dim)

    def embed(self, x: Tensor) -> Tensor:
        """``x [B, *input_shape]`` -> unit-norm ``[B, embed_dim]``."""
        return F.normalize(self.head(pool_tokens(self.tower(x), self.pool)), dim=-1)

    def forward(self, a: Tensor, b: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Both inputs through the same weights: ``([B, E], [B, E])``; one input alone: its ``[B, E]``."""
        if b is None:
            return self.embed(a)
        return self.embed(a), self.embed(b)

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Cosine similarity ``[B]`` of each pair; higher means more alike."""
        ea, eb = self.embed(a), self.embed(b)
        return (ea * eb).sum(-1)

    def embedding_distance(self, ea: Tensor, eb: Tensor) -> Tensor:
        """Euclidean distance ``[B]`` of unit embeddings ``[B, E]`` (in [0, 2]); lower means more alike."""
        return (ea - eb).norm(dim=-1)

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """:meth:`embedding_distance` of the inputs' embeddings ``[B]``."""
        return self.embedding_distance(self.embed(a), self.embed(b))


class PairClassifier(nn.Module):
    """A Siamese network whose head scores ``|f1 - f2|``: ``(a, b) -> same-class logit [B]``."""

    def __init__(self, siamese: SiameseNetwork, hidden: int = 64) -> None:
        super().__init__()
        self.siamese = siamese
        dim = (
            siamese.head[-1].out_features
            if isinstance(siamese.head, nn.Sequential)
            else siamese.head.out_features
        )
        self.scorer = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Logit ``[B]`` that ``a`` and ``b`` show the same class."""
        ea, eb = self.siamese.embed(a), self.siamese.embed(b)
        return self.scorer((ea - eb).abs()).squeeze(-1)

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Same-class probability ``[B]``."""
        return torch.sigmoid(self(a, b))

    def embed(self, x: Tensor) -> Tensor:
        """The Siamese embedding ``[B, E]`` of ``x``."""
        return self.siamese.embed(x)

    def embedding_distance(self, ea: Tensor, eb: Tensor) -> Tensor:
        """``1 - P(same)`` ``[B]`` in float64 from embeddings, as ``sigmoid(-logit)`` so confident pairs keep
        their order."""
        return torch.sigmoid(-self.scorer((ea - eb).abs()).squeeze(-1).double())

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """:meth:`embedding_distance` of the inputs' embeddings ``[B]``."""
        return self.embedding_distance(self.siamese.embed(a), self.siamese.embed(b))


class CrossModalTwoTower(nn.Module):
    """One tower per modality (optionally followed by one shared trunk) into one unit-norm space.

    ``embed(m, x [B, ...]) -> [B, embed_dim]``; ``forward(batch)`` embeds every modality present in the dict.
    """

    def __init__(
        self,
        towers: dict[str, nn.Module],
        input_shapes: dict[str, Sequence[int]],
        embed_dim: int = 64,
        head: str = "mlp",
        trunk: nn.Module | None = None,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if len(towers) < 2:
            raise ConfigError(
                f"model.towers needs two modalities for a cross-modal model, got {sorted(towers)}"
            )
        self.towers = nn.ModuleDict(towers)
        self.input_shapes = {m: tuple(s) for m, s in input_shapes.items()}
        shapes = {m: probe_tokens(t, self.input_shapes[m]) for m, t in towers.items()}
        self.trunk = trunk
        self.pool = pool
        if trunk is not None and len({d for _, d in shapes.values()}) != 1:
            raise ConfigError(
                f"a shared trunk needs one token width for every tower, got {shapes}; set the towers' dim"
            )
        self.heads = nn.ModuleDict(
            {m: embedding_head(head, _pooled_dim(*shapes[m], pool), embed_dim) for m in towers}
        )

    @property
    def modalities(self) -> list[str]:
        """Sorted modality names."""
        return sorted(self.towers)

    def embed(self, modality: str, x: Tensor) -> Tensor:
        """``x [B, *input_shape]`` of ``modality`` -> unit-norm ``[B, embed_dim]``."""
        if modality not in self.towers:
            raise ConfigError(f"this model has no {modality!r} tower; it embeds {', '.join(self.modalities)}")
        tokens = self.towers[modality](x)
        if self.trunk is not None:
            tokens = self.trunk(tokens, modality)
        return F.normalize(self.heads[modality](pool_tokens(tokens, self.pool)), dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Embeddings ``{m: [B, embed_dim]}`` of every modality of the model present in ``batch``."""
        return {m: self.embed(m, batch[m]) for m in self.modalities if m in batch}

    def distance(self, modality_a: str, a: Tensor, modality_b: str, b: Tensor) -> Tensor:
        """Euclidean distance ``[B]`` between unit embeddings of ``a`` (``modality_a``) and ``b``; lower = alike."""
        return self.embedding_distance(self.embed(modality_a, a), self.embed(modality_b, b))

    def embedding_distance(self, ea: Tensor, eb: Tensor) -> Tensor:
        """Euclidean distance ``[B]`` of unit embeddings ``[B, E]`` of any two modalities."""
        return (ea - eb).norm(dim=-1)


def _check_keys(cfg: Mapping[str, Any], valid: Sequence[str], recipe: str) -> None:
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown model keys {unknown} for the {recipe} recipe; valid keys: {', '.join(valid)}"
        )


def build_siamese(
    cfg: Mapping[str, Any], modality: str, input_shape: Sequence[int], pair_classifier: bool = False
) -> SiameseNetwork | PairClassifier:
    """The ``model`` section of a Siamese config -> :class:`SiameseNetwork` (or :class:`PairClassifier` for
    pair-BCE). ``model.tower`` is ``{name, **kwargs}`` of a registered tower for ``modality`` inputs of
    ``input_shape`` (no batch dim); ``model.dim`` is the tower's token width unless the tower sets one."""
    from dan.models.builders import build_tower_for

    cfg = dict(cfg)
    _check_keys(cfg, SIAMESE_KEYS, "siamese")
    if "tower" not in cfg:
        raise ConfigError("model.tower is required, e.g. model.tower={name: image_cnn}")
    tower = build_tower_for(modality, cfg["tower"], int(cfg.get("dim", 64)))
    net = SiameseNetwork(
        tower,
        input_shape,
        int(cfg.get("embed_dim", 64)),
        str(cfg.get("head", "mlp")),
        str(cfg.get("pool", "mean")),
    )
    return PairClassifier(net, int(cfg.get("pair_hidden", 64))) if pair_classifier else net


def build_crossmodal(cfg: Mapping[str, Any], input_shapes: Mapping[str, Sequence[int]]) -> CrossModalTwoTower:
    """The ``model`` section of a cross-modal config -> :class:`CrossModalTwoTower`.

    ``model.towers.<modality>`` names each tower; ``model.trunk`` (``{name, share, ...}`` or null) adds
    one shared trunk of width ``model.dim`` after them.
    """
    from dan.models.builders import build_tower_for
    from dan.models.trunk import build_trunk

    cfg = dict(cfg)
    _check_keys(cfg, CROSSMODAL_KEYS, "crossmodal")
    towers_cfg = dict(cfg.get("towers") or {})
    missing = sorted(set(input_shapes) - set(towers_cfg))
    if missing:
        raise ConfigError(
            f"model.towers lacks {', '.join(missing)}; the data has modalities {sorted(input_shapes)}"
        )
    dim = int(cfg.get("dim", 64))
    towers = {m: build_tower_for(m, towers_cfg[m], dim) for m in sorted(towers_cfg)}
    trunk = None
    if cfg.get("trunk"):
        trunk_cfg = dict(cfg["trunk"])
        name = trunk_cfg.pop("name", "mlp")
        try:
            trunk = build_trunk(name, sorted(towers), dim, **trunk_cfg)
        except ConfigError as exc:
            raise ConfigError(f"model.trunk: {exc}") from None
    shapes = {m: input_shapes[m] for m in towers}
    return CrossModalTwoTower(
        towers,
        shapes,
        int(cfg.get("embed_dim", 64)),
        str(cfg.get("head", "mlp")),
        trunk,
        str(cfg.get("pool", "mean")),
    )


def build_metric_model(
    kind: str, cfg: Mapping[str, Any], input_shapes: Mapping[str, Sequence[int]]
) -> SiameseNetwork | PairClassifier | CrossModalTwoTower:
    """Rebuild a model of ``kind`` (``siamese``, ``pair_classifier``, ``crossmodal``) from its ``model``
    config and ``{modality: input shape}``, as stored in a checkpoint's ``metric_model`` entry."""
    if kind == "crossmodal":
        return build_crossmodal(cfg, input_shapes)
    if kind not in METRIC_MODEL_KINDS or len(input_shapes) != 1:
        raise ConfigError(f"metric model kind {kind!r} with inputs {sorted(input_shapes)} is not valid")
    ((modality, shape),) = input_shapes.items()
    return build_siamese(cfg, modality, shape, pair_classifier=kind == "pair_classifier")
