"""What a resumed run may change: the run's length (``train.epochs``) and how it is watched and run (logging,
checkpoint interval, device, threads, evaluation). Anything that shapes the model, the data, the optimizer
or the order of batches must match the checkpoint, or the continued run would not be the same experiment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from dan.config import RunConfig
from dan.errors import CheckpointError

MAY_CHANGE = (
    "train.epochs",
    "train.log_every",
    "train.checkpoint_every",
    "train.num_threads",
    "train.eval_batch_size",
    "train.early_stopping.patience",
    "logger",
    "quiet",
    "device",
    "resume",
    "run_name",
    "output_dir",
    "overwrite",
    "data.root",
    "train.compile",
    "wandb.",
    "eval.",
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved value, current value)}`` for every key that differs between two resolved configs."""
    a, b = flatten(saved), flatten(current)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def with_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's config over the schema's defaults: a key dan gained after the checkpoint was written
    reads as its default, which is what the run trained with."""
    defaults = OmegaConf.to_container(OmegaConf.structured(RunConfig), resolve=True)
    return OmegaConf.to_container(OmegaConf.merge(defaults, dict(saved)), resolve=True)  # type: ignore[return-value]


def check_resumable(path: str, saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The changes resume supports (see :data:`MAY_CHANGE`); raises CheckpointError naming every other
    changed key with both values and what to do. Keys ``saved`` lacks read as the schema's defaults."""
    changes = config_changes(with_defaults(saved), current)
    refused = {
        k: v for k, v in changes.items()
        if not any(k == m or (m.endswith(".") and k.startswith(m)) for m in MAY_CHANGE)
    }
    if refused:
        listed = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in list(refused.items())[:8])
        more = f" (+{len(refused) - 8} more)" if len(refused) > 8 else ""
        raise CheckpointError(
            f"resume={path}: the config differs from the checkpoint's in keys resume cannot change: {listed}{more}. "
            "Resume with the checkpoint's values (a resumed run may change train.epochs, logging, checkpoint "
            "interval, device, threads and eval.*), or start a new run without resume="
        )
    return {k: v for k, v in changes.items() if k not in refused}
