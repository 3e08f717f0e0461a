"""Benchmark: training on a busy machine. The README's main job (``avmnist_concat_offline``, ``--epochs``
epochs) trained alone, beside a CPU-bound neighbour (one Python busy loop) and beside a second identical
training, under OpenMP's two wait policies: ``ACTIVE`` (threads spin between parallel regions: torch's own
default) and ``PASSIVE`` (threads sleep: dan's default, set when ``dan`` is imported before torch). Each
training is a fresh ``dan train`` process; the figure is its training throughput (samples per second over
the epochs, from ``results.json``: data building and testing excluded) and its whole wall time.

    DAN_DATA=../shared/data python bench/busy_machine.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NEIGHBOURS = ("alone", "busy loop", "second training")


def _train(out: Path, name: str, policy: str, config: str, overrides: list[str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "dan.cli", "train", config, *overrides, "quiet=true", "logger=none",
           f"output_dir={out}", f"run_name={name}"]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_WAIT_POLICY": policy}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], started: float, run_dir: Path) -> dict[str, float]:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"training failed (exit {proc.returncode}): {err[-2000:]}")
    summary = json.loads((run_dir / "results.json").read_text())["summary"]
    return {"train_samples_per_s": summary["train_samples_per_s"], "wall_s": time.perf_counter() - started}


def measure(policy: str, neighbour: str, config: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """One training under ``policy`` beside ``neighbour``; for two trainings, the mean of the pair."""
    hog = None
    if neighbour == "busy loop":
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    started = time.perf_counter()
    names = ["a", "b"] if neighbour == "second training" else ["a"]
    procs = {n: _train(out, f"{policy}-{neighbour}-{n}".replace(" ", "_"), policy, config, overrides) for n in names}
    runs = [_finish(p, started, out / f"{policy}-{neighbour}-{n}".replace(" ", "_")) for n, p in procs.items()]
    if hog is not None:
        hog.kill()
        hog.wait()
    return {
        "policy": policy,
        "neighbour": neighbour,
        "train_samples_per_s": sum(r["train_samples_per_s"] for r in runs) / len(runs),
        "wall_s": max(r["wall_s"] for r in runs),
    }


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--config", default="avmnist_concat_offline")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    config, overrides = args.config, [f"train.epochs={args.epochs}", f"device={args.device}"]
    if args.quick:
        config, overrides = "quickstart", ["train.epochs=1", "data.n_train=400", "data.n_val=100", "data.n_test=100"]
    out = Path(tempfile.mkdtemp(prefix="dan-busy-"))
    # a first run builds the data cache, so no measured run pays for it
    common.print_table([measure("PASSIVE", "alone", config, overrides, out / "warm")])
    rows = [measure(p, n, config, overrides, out) for n in NEIGHBOURS for p in ("ACTIVE", "PASSIVE")]
    alone = {r["policy"]: r["train_samples_per_s"] for r in rows if r["neighbour"] == "alone"}
    for r in rows:
        r["vs_alone"] = r["train_samples_per_s"] / alone[r["policy"]]
    common.print_table(rows)
    common.save("busy_machine", args, {"config": config, "overrides": overrides, "rows": rows})


if __name__ == "__main__":
    main()
