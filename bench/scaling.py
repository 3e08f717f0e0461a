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
SIDE_BY_SIDE = "2 ranks side by side, no DDP"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wait_for_peers() -> None:
    """With ``DAN_BENCH_BARRIER=DIR:N`` set, sign in under DIR and wait until N processes have, so that
    processes launched side by side time the same stretch of wall clock."""
    spec = os.environ.get("DAN_BENCH_BARRIER")
    if not spec:
        return
    folder, count = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    while len(os.listdir(folder)) < int(count):
        time.sleep(0.005)


def ddp_worker(args: Any) -> None:
    """One torchrun rank: timed training steps; rank 0 prints the global rate."""

    common.set_threads(args.threads)
    recipe = common.make_recipe(
        args.config, ["train.epochs=1000", *args.overrides], args.device, args.threads
    )
    batches = common.train_batches(recipe)
    wait_for_peers()
    win = common.time_steps(recipe.optimise, batches, args.steps, args.warmup, args.device)
    global_batch = recipe.task.train_batches.batch_size * recipe.info.world_size
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
    win = common.time_steps(recipe.optimise, batches, args.steps, args.warmup, args.device)
    step_s = win["seconds"] / win["steps"]
    out = {
        "pairs_per_image": args.pairs_per_image,
        "train_pairs": len(recipe.task.splits["train"]),
        "build_s": build_s,
        "reload_s": reload_s,
        "step_ms": 1000 * step_s,
        "epoch_s_projected": step_s * len(recipe.task.train_batches),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(MARK + json.dumps(out), flush=True)


def launch(cmd: list[str], env: dict[str, str], copies: int = 1) -> list[dict[str, Any]]:
    """Run ``copies`` of ``cmd`` at the same time; each one's RESULT line."""
    procs = [
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
        )
        for _ in range(copies)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
        line = next(x for x in out.splitlines() if x.startswith(MARK))
        results.append(json.loads(line[len(MARK) :]))
    return results


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
    """1 and 2 torchrun processes at the same global batch; one rank's share of the work alone (half the
    batch on one thread, world size 1), whose double is what 2 ranks could reach if both cores were free of
    each other and communication were free; and two such ranks run side by side without DDP, which keeps
    the sharing of the machine (caches, memory bandwidth) but drops the gradient all-reduce. The gaps
    between those rates split the cost of 2 processes into contention and DDP itself."""
    from dan.config import load_config

    batch = int(load_config(args.config, list(args.overrides)).train.batch_size)
    half, one = [f"train.batch_size={batch // 2}"], max(1, args.threads // 2)
    layouts = [
        ("1 process", 1, args.threads, [], 1),
        ("2 processes", 2, one, [], 1),
        ("one rank alone", 1, one, half, 1),
        (SIDE_BY_SIDE, 1, one, half, 2),
    ]
    rows = []
    cores = os.cpu_count() or 1
    for _ in range(args.repeats):
        for label, n, threads, extra, copies in layouts:
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
            with tempfile.TemporaryDirectory() as barrier:
                env = {"OMP_NUM_THREADS": str(threads), "DAN_BENCH_BARRIER": f"{barrier}:{copies}"}
                res = launch(cmd, env, copies)
            rows.append(
                {
                    "layout": label,
                    "processes": n * copies,
                    "threads_each": threads,
                    "cores": cores,
                    "pairs_per_s": sum(r["pairs_per_s"] for r in res),
                    "step_ms": max(r["step_ms"] for r in res),
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
            rows.append(launch(cmd, {"DAN_CACHE": cache, "OMP_NUM_THREADS": str(args.threads)})[0])
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
        for label in dict.fromkeys(r["layout"] for r in procs)
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
