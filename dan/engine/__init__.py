"""Training and evaluation: the one training loop (:class:`Engine`) that every recipe runs its
:class:`Task` in, checkpoints, DDP set-up, evaluation, and the ``dan`` subcommands."""

from dan.engine.engine import BaseTask, BatchSource, Engine, StepOutput, Task, Validation, checkpoint_record
from dan.engine.recipes import script_main

__all__ = ["BaseTask", "BatchSource", "Engine", "StepOutput", "Task", "Validation", "checkpoint_record", "script_main"]
