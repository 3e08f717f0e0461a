"""Benchmark: scaling on CPU.

1. Processes: training throughput of 1 vs 2 ``torchrun`` processes (gloo DDP, real subprocesses) at the
   same global batch, splitting the cores between the processes (2 threads for 1 process, 1 each for 2).
2. Dataset size: ``data.pairs_per_image`` of 1, 4 and 16, each in its own process with a cold cache:
   cache build time, reload time, step time, projected epoch time and peak resident memory.

    DAN_DATA=../shared/data python bench/scaling.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MARK = "RESULT "


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ddp_worker(args: Any) -> None:
    """One torchrun rank: timed training steps; rank 0 prints the global rate."""

    common.set_threads(args.threads)
    recipe = common.make_recipe(
        args.config, ["train.epochs=1000", *args.overrides], args.device, args.threads
    )
    batches = common.train_batches(recipe)
    win = common.time_steps(recipe.train_step, batches, args.steps, args.warmup, args.device)
    global_batch = recipe.train_loader.batch_size * recipe.info.world_size
    if recipe.info.is_main:
        rate = global_batch * win["steps"] / win["seconds"]
        print(
            MARK + json.dumps({"pairs_per_s": rate, "step_ms": 1000 * win["seconds"] / win["steps"]}),
            flush=True,
        )


def data_worker(args: Any) -> None:
    """One dataset size in a fresh process: cold build, reload, steps, peak memory."""
    from dan.config import load_config, to_dict
    from dan.data import build_data

    common.set_threads(args.threads)
    overrides = [f"data.pairs_per_image={args.pairs_per_image}", "train.epochs=1000", *args.overrides]
    data_cfg = to_dict(load_config(args.config, overrides).data)
    t = time.perf_counter()
    build_data(data_cfg)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    build_data(data_cfg)
    reload_s = time.perf_counter() - t
    recipe = common.make_recipe(args.config, overrides, args.device, args.threads)
    batches = common.train_batches(recipe)
    win = common.time_steps(recipe.train_step, batches, args.steps, args.warmup, args.device)
    step_s = win["seconds"] / win["steps"]
    out = {
        "pairs_per_image": args.pairs_per_image,
        "train_pairs": len(recipe.splits["train"]),
        "build_s": build_s,
        "reload_s": reload_s,
        "step_ms": 1000 * step_s,
        "epoch_s_projected": step_s * len(recipe.train_loader),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(MARK + json.dumps(out), flush=True)


def launch(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith(MARK))
    return json.loads(line[len(MARK) :])


def child_args(args: Any, threads: int) -> list[str]:
    return [
        "--config",
        args.config,
        "--device",
        args.device,
        "--threads",
        str(threads),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        *args.overrides,
    ]


def processes(args: Any) -> list[dict[str, Any]]:
    """1 and 2 torchrun processes at the same global batch, plus one rank's share of the work alone
    (half the batch on one thread, world size 1): twice that rate is what 2 ranks could reach with free
    communication, so the gap to it is the cost of DDP itself."""
    from dan.config import load_config

    batch = int(load_config(args.config, list(args.overrides)).train.batch_size)
    layouts = [
        ("1 process", 1, args.threads, []),
        ("2 processes", 2, max(1, args.threads // 2), []),
        ("one rank alone", 1, max(1, args.threads // 2), [f"train.batch_size={batch // 2}"]),
    ]
    rows = []
    cores = os.cpu_count() or 1
    for _ in range(args.repeats):
        for label, n, threads, extra in layouts:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={n}",
                __file__,
                "--ddp-worker",
                *child_args(args, threads),
                *extra,
            ]
            t = time.perf_counter()
            res = launch(cmd, {"OMP_NUM_THREADS": str(threads)})
            rows.append(
                {
                    "layout": label,
                    "processes": n,
                    "threads_each": threads,
                    "cores": cores,
                    **res,
                    "wall_s": time.perf_counter() - t,
                }
            )
    return rows


def dataset_sizes(args: Any) -> list[dict[str, Any]]:
    rows = []
    for k in args.pairs_per_image:
        with tempfile.TemporaryDirectory() as cache:
            cmd = [
                sys.executable,
                __file__,
                "--data-worker",
                "--pairs-per-image",
                str(k),
                *child_args(args, args.threads),
            ]
            rows.append(launch(cmd, {"DAN_CACHE": cache, "OMP_NUM_THREADS": str(args.threads)}))
    return rows


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--config", default="avmnist_fast")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="alternating 1- and 2-process runs")
    parser.add_argument("--pairs-per-image", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    if args.ddp_worker:
        return ddp_worker(args)
    if args.data_worker:
        args.pairs_per_image = args.pairs_per_image[0]
        return data_worker(args)
    if args.quick:
        args.steps, args.warmup, args.repeats, args.pairs_per_image = 2, 1, 1, [1, 4]
    procs = processes(args)
    common.print_table(procs)
    sizes = dataset_sizes(args)
    common.print_table(sizes)
    by_layout = {
        label: [r["pairs_per_s"] for r in procs if r["layout"] == label]
        for label in ("1 process", "2 processes", "one rank alone")
    }
    result = {
        "config": args.config,
        "steps": args.steps,
        "processes": procs,
        "pairs_per_s_median": {label: common.median(v) for label, v in by_layout.items()},
        "dataset_sizes": sizes,
    }
    common.save("scaling", args, result)


if __name__ == "__main__":
    main()
