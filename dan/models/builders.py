"""Config -> model: :func:`build_model` (torchtune-style builder) and :func:`create_model` (timm-style
named presets with overrides).

The ``model`` section of a config::

    model:
      num_classes: 10
      dim: 64                       # token width D of the trunk
      towers:                       # one entry per modality: registered tower name + its kwargs
        image: {name: image_cnn}
        audio: {name: audio_cnn, n_mels: 40}
      trunk: {name: mlp, share: true}
      fusion: {name: concat}
      head: {hidden: 0, dropout: 0.0}   # hidden 0 = linear head
      modality_dropout: 0.0         # or {image: 0.2, audio: 0.0}
      mid_fusion: null              # or {name: mmtm, stages: [1], ratio: 4} between the towers' stages

A tower builder that takes a ``dim`` argument gets ``model.dim`` unless its config sets one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from dan.errors import ConfigError
from dan.models.dan import DANModel
from dan.models.fusion import build_fusion
from dan.models.mid_fusion import build_mid_fusion
from dan.models.towers import TOWERS
from dan.models.trunk import build_trunk
from dan.registry import Registry

MODEL_KEYS = ("num_classes", "dim", "towers", "trunk", "fusion", "head", "modality_dropout", "mid_fusion")
HEAD_KEYS = ("hidden", "dropout")

MODELS: Registry[dict] = Registry("models")
"""Named model presets: ``name -> () -> model config dict`` (the ``model`` section)."""


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def _section(cfg: Any, key: str, default: dict[str, Any]) -> dict[str, Any]:
    value = default if cfg is None else cfg
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    return dict(value)


def _named(cfg: Any, key: str, default: str | None = None) -> tuple[str, dict[str, Any]]:
    """``{name: x, **kwargs}`` -> ``(x, kwargs)``; ConfigError naming ``key`` if malformed."""
    section = _section(cfg, key, {"name": default} if default else {})
    name = section.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{key}.name is missing or not a string (got {name!r}); name a registered builder")
    return name, section


def _accepts(builder: Callable[..., Any], arg: str) -> bool:
    try:
        return arg in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False


def _rekey(key: str, build: Callable[[], Any]) -> Any:
    """Run ``build``, prefixing a ConfigError's message with the config ``key`` at fault (unless it names it)."""
    try:
        return build()
    except ConfigError as exc:
        if f"{key}." in str(exc):
            raise
        raise ConfigError(f"{key}: {exc}") from exc


def build_tower_for(modality: str, cfg: Mapping[str, Any], dim: int) -> nn.Module:
    """The tower of ``model.towers.<modality>`` (``{name, **kwargs}``), given ``dim`` if it takes one."""
    key = f"model.towers.{modality}"
    name, kwargs = _named(cfg, key)
    builder = _rekey(key, lambda: TOWERS.get(name))
    if "dim" not in kwargs and _accepts(builder, "dim"):
        kwargs["dim"] = dim
    TOWERS.check_kwargs(name, kwargs, key)
    return _rekey(key, lambda: TOWERS.build(name, **kwargs))


def build_model(cfg: Mapping[str, Any] | DictConfig) -> DANModel:
    """A :class:`DANModel` from a config holding a ``model`` section (or the section itself).

    Unknown part names raise ConfigError listing the valid choices; unknown keys or bad kwargs raise
    ConfigError naming them.
    """
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")
    if isinstance(cfg.get("model"), Mapping):
        cfg = cfg["model"]
    unknown = sorted(set(cfg) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"unknown model keys {unknown}; valid keys: {', '.join(MODEL_KEYS)}")
    num_classes = cfg.get("num_classes")
    if type(num_classes) is not int:
        raise ConfigError(f"model.num_classes must be an int (the number of classes C), got {num_classes!r}")
    if num_classes < 2:
        raise ConfigError(f"model.num_classes must be at least 2 (a classifier of one class learns nothing), got {num_classes}")
    dim = cfg.get("dim", 64)
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"model.dim must be a positive int, got {dim!r}")
    towers_cfg = _section(cfg.get("towers"), "model.towers", {})
    if not towers_cfg:
        raise ConfigError("model.towers is empty; add one entry per modality, e.g. image: {name: image_cnn}")
    # sorted build order: the same seed gives the same weights whatever the YAML key order
    towers = {m: build_tower_for(m, towers_cfg[m], dim) for m in sorted(towers_cfg)}
    names = sorted(towers)
    trunk_name, trunk_kwargs = _named(cfg.get("trunk"), "model.trunk", "mlp")
    trunk = _rekey("model.trunk", lambda: build_trunk(trunk_name, names, dim, **trunk_kwargs))
    fusion_name, fusion_kwargs = _named(cfg.get("fusion"), "model.fusion", "concat")
    fusion = _rekey("model.fusion", lambda: build_fusion(fusion_name, names, dim, **fusion_kwargs))
    head = _section(cfg.get("head"), "model.head", {})
    bad = sorted(set(head) - set(HEAD_KEYS))
    if bad:
        raise ConfigError(f"unknown model.head keys {bad}; valid keys: {', '.join(HEAD_KEYS)}")
    mid = None
    if cfg.get("mid_fusion") is not None:
        mid_name, mid_kwargs = _named(cfg.get("mid_fusion"), "model.mid_fusion")
        mid = _rekey("model.mid_fusion", lambda: build_mid_fusion(mid_name, towers, **mid_kwargs))
    return DANModel(
        towers,
        trunk,
        fusion,
        num_classes=cfg["num_classes"],
        head_hidden=head.get("hidden", 0),
        head_dropout=head.get("dropout", 0.0),
        modality_dropout=cfg.get("modality_dropout", 0.0),
        mid_fusion=mid,
    )


@MODELS.register("avmnist_dan")
def avmnist_dan() -> dict[str, Any]:
    """AV-MNIST default: small image and audio CNNs, shared MLP trunk, concat fusion, linear head."""
    return {
        "num_classes": 10,
        "dim": 64,
        "towers": {"image": {"name": "image_cnn"}, "audio": {"name": "audio_cnn", "n_mels": 40}},
        "trunk": {"name": "mlp", "share": True},
        "fusion": {"name": "concat"},
        "head": {"hidden": 0},
        "modality_dropout": 0.0,
    }


@MODELS.register("avmnist_dan_attention")
def avmnist_dan_attention() -> dict[str, Any]:
    """AV-MNIST with a shared transformer trunk and cross-modal attention fusion."""
    cfg = avmnist_dan()
    cfg.update(
        trunk={"name": "transformer", "share": True, "depth": 1}, fusion={"name": "attention", "heads": 4}
    )
    return cfg


def model_config(name: str, **overrides: Any) -> DictConfig:
    """Preset ``name``'s model section with ``overrides`` merged in (keys may be dotted paths, e.g.
    ``**{"fusion.name": "attention"}``; mapping values are merged)."""
    cfg = OmegaConf.create(MODELS.get(name)())
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=True)
    return cfg


def create_model(name: str, **overrides: Any) -> DANModel:
    """timm-style: ``create_model("avmnist_dan", num_classes=5, **{"fusion.name": "gated"})``."""
    return build_model(model_config(name, **overrides))
