"""dan: multimodal two-tower fusion models in PyTorch."""

from __future__ import annotations

import os
from typing import Any

# Idle OpenMP threads sleep instead of spinning. Spinning wins ~10% alone but loses 1.5-2x beside another
# busy process on the same cores (bench/busy_machine.py); libgomp reads this when torch loads, so it only
# takes effect when dan is imported first (the `dan` command, `python -m dan.recipes.*`). Set
# OMP_WAIT_POLICY=ACTIVE for a machine that runs nothing else.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path: Any, map_location: Any = "cpu") -> Any:
    """Load a checkpoint into a ready model with its preprocessing; see :func:`dan.api.load`."""
    from dan.api import load as _load

    return _load(path, map_location=map_location)
