"""Training and evaluation: the one training loop (:class:`Engine`) that every recipe runs its
:class:`Task` in, checkpoints, DDP set-up, evaluation, and the ``dan`` subcommands.

The names below are imported on first use, so ``dan --help`` and the light subcommands never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BaseTask": "dan.engine.engine",
    "BatchSource": "dan.engine.engine",
    "Engine": "dan.engine.engine",
    "StepOutput": "dan.engine.engine",
    "Task": "dan.engine.engine",
    "Validation": "dan.engine.engine",
    "checkpoint_record": "dan.engine.engine",
    "script_main": "dan.engine.recipes",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dan.engine' has no attribute {name!r}")
