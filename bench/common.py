"""Shared plumbing of the benchmark scripts: machine facts, result files, tables."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


def median_time_to_target(times: list[float | None]) -> float | None:
    """Median time of runs stopped at a target, ``None`` for a run that never reached it: such a run counts
    as slower than every run that did, so the median exists when more than half reached (three runs, two
    reaching: the slower of the two) and is ``None`` otherwise."""
    value = statistics.median([math.inf if t is None else t for t in times])
    return None if math.isinf(value) else float(value)


def write_result(name: str, result: dict[str, Any], out: Path | None = None, quick: bool = False) -> Path:
    """Write ``result`` plus machine facts to ``bench/results/<name>.json`` (or ``out``); ``--quick`` smoke
    runs go to the temp dir so they never replace a real result."""
    base = Path(tempfile.gettempdir()) / "dan-bench-quick" if quick else RESULTS_DIR
    path = out or base / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **result}, indent=2))
    return path


def save(name: str, args: argparse.Namespace, result: dict[str, Any]) -> Path:
    """Write a benchmark's ``result`` with its device, threads and command (see :func:`write_result`)."""
    full = {"device": args.device, "threads": args.threads, **result, "command": command()}
    path = write_result(name, full, args.out, quick=args.quick)
    print("wrote", path)
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print dict rows as an aligned text table."""
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def command() -> str:
    """The command line that produced a result, as it would be typed from the repository root."""
    return "python " + " ".join(sys.argv)


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares: device, threads, quick, out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (2 = the cores)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings: checks the script runs end to end"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/<name>.json)"
    )
    return parser


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads and one inter-op thread."""
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # fails once any parallel work has run; harmless
        torch.set_num_interop_threads(1)


def make_recipe(config: str, overrides: list[str], device: str, threads: int) -> Any:
    """A prepared :class:`dan.engine.Engine` with the fusion recipe's task, from a shipped config plus
    overrides, quiet, no logger, nothing written outside a temp dir; its ``optimise`` is the library's
    training step, ``task`` holds the splits, model and batches."""
    from dan.config import load_config
    from dan.engine import Engine
    from dan.engine.recipes import load_recipe

    run_dir = tempfile.mkdtemp(prefix="dan-bench-")
    fixed = [
        "logger=none",
        "quiet=true",
        f"device={device}",
        f"train.num_threads={threads}",
        f"output_dir={run_dir}",
    ]
    cfg = load_config(config, [*fixed, *overrides])
    return Engine(cfg).prepare(load_recipe(cfg.recipe).FusionTask(cfg))


def endless(loader: Iterable[Any]) -> Iterator[Any]:
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader


def train_batches(recipe: Any) -> Iterator[dict[str, torch.Tensor]]:
    """The recipe's training batches on its device, epoch after epoch."""
    from dan.engine.trainer import to_device

    return (to_device(b, recipe.info.device) for b in endless(recipe.task.train_batches))


def sync(device: str) -> None:
    """Wait for queued CUDA work (a no-op on CPU), so wall-clock timings are complete."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(
    step: Callable[[Any], Any], batches: Iterator[Any], steps: int, warmup: int, device: str
) -> dict[str, float]:
    """Run ``warmup`` untimed then ``steps`` timed training steps on ``next(batches)``.

    Returns the window's wall seconds, the share of it spent waiting for batches (``loader_s``), and the
    steps run; a step is complete when it returns (CUDA is synchronised).
    """
    for _ in range(warmup):
        step(next(batches))
    sync(device)
    loader = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        batch = next(batches)
        loader += time.perf_counter() - t
        step(batch)
    sync(device)
    return {"seconds": time.perf_counter() - start, "loader_s": loader, "steps": steps}
