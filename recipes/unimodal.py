"""Unimodal baselines: the fusion recipe's loop with a DAN of exactly one tower (image only or audio
only), so fused and unimodal accuracies are measured the same way.

    dan train image_only [key=value ...]
    python recipes/unimodal.py --config audio_only [key=value ...]
"""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from dan.engine.recipes import load_recipe
from dan.errors import ConfigError


def main(cfg: DictConfig) -> dict[str, Any]:
    """Check the config names exactly one tower, then run the fusion recipe's loop on it."""
    towers = sorted(cfg.model.towers)
    if len(towers) != 1:
        raise ConfigError(f"model.towers has {towers}; a unimodal baseline needs exactly one tower")
    return load_recipe("avmnist_fusion").main(cfg)


if __name__ == "__main__":
    from dan.engine.recipes import script_main

    sys.exit(script_main(main))
