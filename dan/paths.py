"""Where data and caches live. This is the only module that knows any default path.

Data root, in order: an explicit value (the ``data.root`` config key), then ``$DAN_DATA``,
then ``datasets/`` in the checkout. Cache root: an explicit value, then ``$DAN_CACHE``,
then ``datasets/cache`` in the checkout. The data root may be read-only; caches never go there.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def checkout_datasets_dir() -> Path:
    """``datasets/`` beside the package in a source checkout, else ``./datasets``."""
    candidate = PACKAGE_DIR.parent / "datasets"
    if (PACKAGE_DIR.parent / "pyproject.toml").exists():
        return candidate
    return Path.cwd() / "datasets"


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds ``mnist/`` and ``fsdd/``."""
    if explicit not in (None, ""):
        return Path(explicit).expanduser()
    env = os.environ.get("DAN_DATA")
    if env:
        return Path(env).expanduser()
    return checkout_datasets_dir()


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder for feature caches and AV-MNIST manifests (created on demand by writers)."""
    if explicit not in (None, ""):
        return Path(explicit).expanduser()
    env = os.environ.get("DAN_CACHE")
    if env:
        return Path(env).expanduser()
    return checkout_datasets_dir() / "cache"


def data_source_explanation(root: Path) -> str:
    """Says which rule chose ``root``, for error messages."""
    if os.environ.get("DAN_DATA") and Path(os.environ["DAN_DATA"]).expanduser() == root:
        return f"{root} (from $DAN_DATA)"
    return f"{root} (set data.root=PATH or $DAN_DATA to change it)"
