"""Datasets of dan: real AV-MNIST from MNIST + FSDD, and a synthetic stand-in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dan.data.dataset import AVSplit
from dan.data.loader import TensorBatchLoader
from dan.errors import ConfigError

DATASETS = ("avmnist", "synthetic")

__all__ = ["AVSplit", "DATASETS", "TensorBatchLoader", "build_data"]


def build_data(cfg: Mapping[str, Any]) -> dict[str, AVSplit]:
    """Build the splits named by a ``data`` config; ``cfg["name"]`` picks the dataset."""
    name = cfg.get("name", "avmnist")
    if name == "avmnist":
        from dan.data.avmnist import build_avmnist

        return build_avmnist(cfg)
    if name == "synthetic":
        from dan.data.synthetic import build_synthetic

        return build_synthetic(cfg)
    raise ConfigError(f"data.name={name!r} is unknown; valid: {', '.join(DATASETS)}")
