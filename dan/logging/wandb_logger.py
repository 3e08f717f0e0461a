"""Weights & Biases logging. Offline without an API key; a W&B failure never stops training: an unreachable
backend at start keeps the run offline (to ``wandb sync`` later), a failure mid-run warns once and the run
goes on with the console logger."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dan.data.readers import modality_specs
from dan.logging.console import Confusion, ConsoleLogger, Curves, Logger
from dan.logging.media import features_to_waveform, image_to_uint8, is_audio, is_image


def resolve_mode(mode: str) -> str | None:
    """``wandb.mode`` -> the ``mode`` for ``wandb.init``: ``$WANDB_MODE`` wins; ``auto`` is online only
    with an API key."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def confusion_lists(confusion: list[list[int]]) -> tuple[list[int], list[int]]:
    """A ``[C, C]`` count matrix -> per-sample ``(y_true, preds)`` lists, as ``wandb.plot`` wants."""
    y_true: list[int] = []
    preds: list[int] = []
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            y_true += [i] * count
            preds += [j] * count
    return y_true, preds


class WandbLogger(Logger):
    """Logs to a W&B run (``wandb.init`` gets the resolved config) and mirrors everything to ``console``."""

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        wandb_cfg: Mapping[str, Any],
        run_dir: Path,
        run_name: str,
        console: ConsoleLogger,
        preprocessing: Mapping[str, Any] | None = None,
    ) -> None:
        import wandb

        self.wandb = wandb
        self.console = console
        self.cfg = dict(wandb_cfg)
        self.preprocessing = dict(preprocessing or {})
        self.failed = False
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = resolve_mode(self.cfg.get("mode", "auto"))
        kwargs: dict[str, Any] = {
            "project": self.cfg.get("project", "dan"),
            "entity": self.cfg.get("entity"),
            "name": run_name,
            "config": dict(config),
            "dir": os.environ.get("WANDB_DIR") or str(run_dir),
            "tags": list(self.cfg.get("tags") or []),
            "reinit": "finish_previous",
            "settings": wandb.Settings(init_timeout=float(self.cfg.get("init_timeout", 30.0))),
        }
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as exc:
            if mode != "online":
                raise
            self.run = wandb.init(mode="offline", **kwargs)
            reason = str(exc).splitlines()[0] if str(exc) else ""
            warnings.warn(
                f"W&B backend unreachable ({type(exc).__name__}: {reason}); the run is kept offline in "
                f"{Path(self.run.dir).parent}: upload it later with `wandb sync {Path(self.run.dir).parent}`",
                stacklevel=3,
            )

    def set_preprocessing(self, preprocessing: Mapping[str, Any]) -> None:
        """How inputs were normalised, to turn misclassified samples back into images and audio."""
        self.preprocessing = dict(preprocessing)

    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        if self.failed:
            return
        try:
            fn()
        except Exception as exc:  # W&B must never stop training
            self.failed = True
            warnings.warn(
                f"W&B {what} failed ({type(exc).__name__}: {exc}); W&B logging is off for the rest of this run, "
                "the console logger goes on",
                stacklevel=3,
            )

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Per-step scalars to W&B and the console."""
        self.console.log_scalars(metrics, step)
        self._guard("log", lambda: self.run.log(dict(metrics), step=step))

    def log_validation(
        self, metrics: Mapping[str, float], result: Any, step: int, samples: list[dict[str, Any]]
    ) -> None:
        """Accuracy scalars, the confusion matrix (``wandb.plot``) and a table of misclassified samples."""
        self.console.log_validation(metrics, result, step, samples)

        def send() -> None:
            payload: dict[str, Any] = dict(metrics)
            y_true, preds = confusion_lists(result.confusion)
            classes = [str(c) for c in range(len(result.confusion))]
            payload["val/confusion_matrix"] = self.wandb.plot.confusion_matrix(
                y_true=y_true, preds=preds, class_names=classes, title="validation confusion matrix"
            )
            if samples:
                payload["val/misclassified"] = self._table(samples)
            self.run.log(payload, step=step)

        self._guard("validation logging", send)

    def _table(self, samples: list[dict[str, Any]]) -> Any:
        specs = modality_specs(self.preprocessing)
        media = [m for m in specs if m in samples[0]]
        table = self.wandb.Table(columns=["index", "label", "pred", "prob", *media])
        for s in samples:
            row = [s["index"], s["label"], s["pred"], s["prob"]]
            for m in media:
                prep = specs[m]
                if is_image(prep):
                    row.append(
                        self.wandb.Image(image_to_uint8(s[m], prep).numpy(), caption=f"label {s['label']}")
                    )
                elif is_audio(prep):
                    wave, sr = features_to_waveform(s[m], prep)
                    row.append(
                        self.wandb.Audio(wave.numpy(), sample_rate=sr, caption="Griffin-Lim from log-mel")
                    )
                else:
                    row.append(None)
            table.add_data(*row)
        return table

    def log_test(self, metrics: Mapping[str, float], step: int, confusion: Confusion = None, robustness: Curves = None) -> None:
        """Test scalars, the test confusion matrix, accuracy with each modality removed
        (``test/acc_without_<m>`` and a bar chart) and accuracy against noise (``test/noise_curves``)."""
        self.console.log_test(metrics, step, confusion, robustness)

        def send() -> None:
            wb = self.wandb
            payload: dict[str, Any] = dict(metrics)
            if confusion is not None:
                y_true, preds = confusion_lists(confusion)
                payload["test/confusion_matrix"] = wb.plot.confusion_matrix(
                    y_true=y_true, preds=preds, class_names=[str(c) for c in range(len(confusion))],
                    title="test confusion matrix",
                )
            if robustness:
                without = dict(robustness.get("without") or {})
                payload.update({f"test/acc_without_{m}": a for m, a in without.items()})
                if without:
                    table = wb.Table(columns=["removed", "fused accuracy"], data=[[m, a] for m, a in without.items()])
                    payload["test/removal"] = wb.plot.bar(
                        table, "removed", "fused accuracy", title="test accuracy with one modality removed"
                    )
                noise = dict(robustness.get("noise") or {})
                if noise:
                    first = next(iter(noise.values()))
                    payload["test/noise_curves"] = wb.plot.line_series(
                        xs=[p["std"] for p in first],
                        ys=[[p["acc"] for p in pts] for pts in noise.values()],
                        keys=[f"noise added to {m}" for m in noise],
                        title="test accuracy vs input noise",
                        xname="noise std",
                    )
            self.run.log(payload, step=step)

        self._guard("test logging", send)

    def log_figures(self, figures: Mapping[str, Path], step: int) -> None:
        """Each PNG as an image under ``plots/<key>``."""
        self._guard(
            "figure logging",
            lambda: self.run.log({f"plots/{k}": self.wandb.Image(str(p)) for k, p in figures.items()}, step=step),
        )

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: Mapping[str, Any]) -> None:
        """Upload the best checkpoint as a ``model`` artifact (aliases ``best`` and ``epoch-<n>``, file
        ``best.pt``) each time it improves; other saves are noted on the console only."""
        self.console.log_checkpoint(path, aliases, metadata)
        if not self.cfg.get("log_checkpoint", True) or "best" not in aliases:
            return
        aliases = [*aliases, f"epoch-{metadata.get('epoch')}"]

        def send() -> None:
            art = self.wandb.Artifact(
                f"{self.run.name or 'dan'}-model", type="model", metadata=dict(metadata)
            )
            art.add_file(str(path), name=Path(path).name)
            self.run.log_artifact(art, aliases=aliases)

        self._guard("artifact upload", send)

    def message(self, text: str) -> None:
        """Console only."""
        self.console.message(text)

    def rewind(self, step: int) -> None:
        """The console's file only (a W&B run is a new run on resume)."""
        self.console.rewind(step)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Write the summary and close the run."""
        self.console.finish(summary)

        def send() -> None:
            self.run.summary.update(dict(summary))

        self._guard("summary", send)
        try:
            self.run.finish()
            # finish() can return before W&B's service process has written the run's .wandb file; shutting
            # the service down waits for it, so the run file is complete (and syncable) once finish returns
            self.wandb.teardown()
        except Exception as exc:
            warnings.warn(f"W&B finish failed ({type(exc).__name__}: {exc})", stacklevel=2)
