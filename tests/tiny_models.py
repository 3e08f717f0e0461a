"""The smallest real DAN model config (two tiny towers), shared by the model and export tests."""

from __future__ import annotations

from typing import Any


def tiny_model_cfg(num_classes: int = 5, **model: Any) -> dict[str, Any]:
    """A ``model`` config of 16-d features over 28x28 images and 16-mel spectrograms; ``model`` adds or replaces keys."""
    return {
        "num_classes": num_classes,
        "dim": 16,
        "towers": {
            "image": {"name": "image_cnn", "channels": [4, 8], "grid": 3},
            "audio": {"name": "audio_cnn", "n_mels": 16, "channels": [4, 8]},
        },
        **model,
    }
