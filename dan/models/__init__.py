"""dan models: towers, shared trunk, fusion, heads and the :class:`DANModel` that joins them."""

from __future__ import annotations

from dan.models.builders import MODELS, build_model, create_model, model_config
from dan.models.dan import DANModel
from dan.models.fusion import FUSIONS, Fusion, build_fusion
from dan.models.output import DANOutput
from dan.models.towers import TOWERS, build_tower, register_tower
from dan.models.trunk import TRUNKS, SharedTrunk, build_trunk

__all__ = [
    "FUSIONS",
    "MODELS",
    "TOWERS",
    "TRUNKS",
    "DANModel",
    "DANOutput",
    "Fusion",
    "SharedTrunk",
    "build_fusion",
    "build_model",
    "build_tower",
    "build_trunk",
    "create_model",
    "model_config",
    "register_tower",
]
