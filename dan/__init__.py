"""dan: multimodal two-tower fusion models in PyTorch."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path: Any, map_location: Any = "cpu") -> Any:
    """Load a checkpoint into a ready model with its preprocessing; see :func:`dan.api.load`."""
    from dan.api import load as _load

    return _load(path, map_location=map_location)
