"""Run loggers: the :class:`Logger` interface, a silent one and the console one (with ``metrics.jsonl``)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dan.config import LOGGERS
from dan.errors import ConfigError

Confusion = list[list[int]] | None  # [C, C] counts, rows = true class
Curves = Mapping[str, Any] | None  # dan.engine.evaluate.robustness: {"without": {m: acc}, "noise": {m: [...]}}


class Logger:
    """What a recipe reports to. Every method is a no-op here, so a logger overrides what it shows."""

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Per-step scalars: losses, balancer weights, lr, throughput (``{name: value}``)."""

    def log_validation(
        self, metrics: Mapping[str, float], result: Any, step: int, samples: list[dict[str, Any]]
    ) -> None:
        """A validation: scalar ``metrics``, the full :class:`EvalResult` and misclassified ``samples``."""

    def log_test(self, metrics: Mapping[str, float], step: int, confusion: Confusion = None, robustness: Curves = None) -> None:
        """The best checkpoint's test ``metrics``, its ``[C, C]`` confusion counts and the
        :func:`~dan.engine.evaluate.robustness` curves (accuracy with each modality removed, against noise)."""

    def log_figures(self, figures: Mapping[str, Path], step: int) -> None:
        """PNG files ``{key: path}`` the run wrote (learning curves, test plots)."""

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: Mapping[str, Any]) -> None:
        """A checkpoint was written to ``path``."""

    def message(self, text: str) -> None:
        """A line of text for the human watching."""

    def rewind(self, step: int) -> None:
        """A resumed run continues after ``step``: forget what was logged after it (a kill between a log row
        and the next checkpoint would otherwise leave those rows twice)."""

    def finish(self, summary: Mapping[str, Any]) -> None:
        """End of run with its final ``summary``."""


class NullLogger(Logger):
    """``logger=none``: reports nothing."""


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def clock(seconds: float) -> str:
    """Seconds as ``H:MM:SS`` (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _line(step: int, metrics: Mapping[str, float]) -> str:
    parts = [f"run ETA {clock(v)}" if k == "eta_s" else f"{k}={_fmt(v)}" for k, v in metrics.items()]
    return f"step {step} " + " ".join(parts)


class ConsoleLogger(Logger):
    """``logger=console``: lines on stderr (through tqdm, so bars stay intact) and ``metrics.jsonl``."""

    def __init__(self, run_dir: Path | None = None, quiet: bool = False) -> None:
        self.quiet = quiet
        self.file = None if run_dir is None else Path(run_dir) / "metrics.jsonl"
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, record: Mapping[str, Any]) -> None:
        if self.file is not None:
            with self.file.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def rewind(self, step: int) -> None:
        """Drop the rows of ``metrics.jsonl`` logged after ``step`` (rewritten atomically)."""
        if self.file is None or not self.file.exists():
            return
        rows = self.file.read_text().splitlines(keepends=True)
        kept = [r for r in rows if not _after(r, step)]
        if len(kept) != len(rows):
            tmp = self.file.with_name(f".{self.file.name}.tmp")
            tmp.write_text("".join(kept))
            tmp.replace(self.file)

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Print one line of step scalars (unless quiet) and append them to ``metrics.jsonl``."""
        self._write({"step": step, **metrics})
        if not self.quiet:
            tqdm.write(_line(step, metrics))

    def log_validation(
        self, metrics: Mapping[str, float], result: Any, step: int, samples: list[dict[str, Any]]
    ) -> None:
        """Print the validation scalars (always: they are the run's result) and append them to the file."""
        self._write({"step": step, **metrics})
        tqdm.write(_line(step, metrics))

    def log_test(self, metrics: Mapping[str, float], step: int, confusion: Confusion = None, robustness: Curves = None) -> None:
        """Append the test metrics (and the robustness curves) to the file."""
        self._write({"step": step, **metrics, **({"robustness": dict(robustness)} if robustness else {})})

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: Mapping[str, Any]) -> None:
        """Note the checkpoint on the console (also when quiet: where a run can be resumed from matters)."""
        tqdm.write(f"checkpoint saved {path} ({', '.join(aliases)}) step={metadata.get('step')}")

    def message(self, text: str) -> None:
        """Print ``text``."""
        tqdm.write(text)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Append the summary to the file."""
        self._write({"summary": dict(summary)})


def _after(row: str, step: int) -> bool:
    try:
        record = json.loads(row)
    except ValueError:
        return True  # a row the kill cut in half
    return isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step


def build_logger(
    name: str,
    *,
    run_dir: Path,
    quiet: bool,
    config: Mapping[str, Any],
    wandb_cfg: Mapping[str, Any],
    run_name: str,
    is_main: bool = True,
) -> Logger:
    """The logger named by the ``logger`` key; ranks other than 0 get a :class:`NullLogger`."""
    if not is_main or name == "none":
        return NullLogger()
    console = ConsoleLogger(run_dir, quiet=quiet)
    if name == "console":
        return console
    if name == "wandb":
        from dan.logging.wandb_logger import WandbLogger

        try:
            return WandbLogger(
                config=config, wandb_cfg=wandb_cfg, run_dir=run_dir, run_name=run_name, console=console
            )
        except Exception as exc:  # W&B must never stop training
            warnings.warn(
                f"W&B could not start ({type(exc).__name__}: {exc}); logging to the console only",
                stacklevel=2,
            )
            return console
    raise ConfigError(f"logger={name!r} is not valid; valid choices: {', '.join(LOGGERS)}")
