"""The ``DATASETS`` registry: ``data.name`` -> a dataset class built from the other ``data.*`` keys.

Register one with ``@register_dataset("name")`` on a class whose constructor takes its config keys (its
signature is the schema) and checks them without reading data, and whose ``build(preprocessing=None,
only=None)`` returns ``{split: Split}`` (:class:`dan.data.dataset.Dataset`). Installed packages add
datasets through the entry-point group ``dan.datasets``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dan.data.dataset import Dataset, Split
from dan.errors import ConfigError
from dan.registry import Registry

DATASETS: Registry[Dataset] = Registry("datasets")
DEFAULT_DATASET = "avmnist"


def register_dataset(name: str) -> Callable[[type], type]:
    """Decorator: ``@register_dataset("name")`` on a dataset class (see :class:`dan.data.dataset.Dataset`)."""
    return DATASETS.register(name)  # type: ignore[return-value]


def _load_builtin() -> None:
    # importing the modules registers the shipped datasets
    from dan.data import avmnist, folder, fsdd_dataset, manifest, mnist_dataset, synthetic  # noqa: F401


def build_dataset(cfg: Mapping[str, Any]) -> Dataset:
    """The dataset a ``data`` config names (``cfg["name"]``, default ``avmnist``), its keys checked against the
    dataset's signature; reads no data. A ConfigError names the key at fault and the valid ones."""
    _load_builtin()
    cfg = dict(cfg)
    name = str(cfg.pop("name", DEFAULT_DATASET))
    if name not in DATASETS:
        raise ConfigError(f"data.name={name!r} is not valid; valid choices: {', '.join(DATASETS.names())}")
    DATASETS.check_kwargs(name, cfg, "data")
    try:
        return DATASETS.get(name)(**cfg)
    except TypeError as exc:
        raise ConfigError(f"data (data.name={name}): {exc}") from None


def build_data(
    cfg: Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Split]:
    """Build the splits a ``data`` config names (see :meth:`Dataset.build`)."""
    return build_dataset(cfg).build(preprocessing=preprocessing, only=only)


def dataset_names() -> list[str]:
    """Every registered dataset name, plugins included."""
    _load_builtin()
    return DATASETS.names()
