"""Shared by the CLI tests: overrides that shrink the ``quickstart`` config to a synthetic run of a few seconds,
and signalling a training process at a line it prints (a checkpoint written, a step logged)."""

from __future__ import annotations

import subprocess
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


def signal_when(proc: subprocess.Popen[str], marker: str, sig: int) -> str:
    """Send ``sig`` to ``proc`` (a ``dan train`` with stdout piped, text mode) at the first line it prints that
    holds ``marker`` (e.g. ``"(latest) step=4"``: the checkpoint of step 4 is written); wait for it to end and
    return everything it printed."""
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    seen.append(proc.stdout.read())
    proc.wait(timeout=120)
    return "".join(seen)
