"""Modality towers: ``raw input -> tokens [B, N, D]``, registered by name in :data:`TOWERS`."""

from __future__ import annotations

from dan.models.towers.audio import AudioCNN, AudioTCN
from dan.models.towers.image import ImageCNN, ImageResNet
from dan.models.towers.registry import TOWERS, build_tower, register_tower
from dan.models.towers.vector import VectorMLP

__all__ = ["TOWERS", "AudioCNN", "AudioTCN", "ImageCNN", "ImageResNet", "VectorMLP", "build_tower", "register_tower"]
