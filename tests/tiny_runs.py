"""Overrides that shrink the ``quickstart`` config to a synthetic run of a few seconds, shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Mapping

BASE: dict[str, object] = {
    "data.n_train": 120,
    "data.n_val": 60,
    "data.n_test": 60,
    "model.dim": 16,
    "train.epochs": 2,
    "train.batch_size": 20,
    "train.eval_batch_size": 64,
    "train.num_threads": 1,
    "train.log_every": 2,
    "quiet": "true",
}


def tiny_run(changes: Mapping[str, object] | None = None) -> list[str]:
    """``key=value`` overrides: ``BASE`` updated by ``changes``; a change to ``None`` drops that key."""
    merged = {**BASE, **(changes or {})}
    return [f"{key}={value}" for key, value in merged.items() if value is not None]
