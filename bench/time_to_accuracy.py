"""Benchmark: wall time from process start (imports and data loading included) until a test accuracy on
the offline AV-MNIST split reaches the target, median over separate processes.

``--metric acc`` (default) is the fused accuracy; ``--metric acc_image`` the image head's accuracy inside
the fused model (``acc_<m>`` for any modality). ``--baseline`` also times, in the same run, the plain CNN
of ``bench/plain_cnn.py`` (each seed its own process, stopped at the target) and prints the ratio of the
medians; issue 12's goal is avmnist_fast's image head at 99.5% in at most half the plain CNN's time.

Each run is a fresh ``python bench/time_to_accuracy.py --child`` process that builds the recipe from
the config (data from the cache, as every run after the first does), trains with the library's training
step, and evaluates the test split after every epoch as the recipe's own test does (with its ``eval.tta``
views, their cost on the clock) only to stop the clock once the target is reached;
test accuracy never steers training. Run ``i`` uses ``seed=i``, so the median covers different
initialisations and shuffles; a run that never reaches the target counts as slower than every run that did
(the median exists when more than half reach it). When the plain CNN's median run never reaches it, the
ratio is bounded from above by its whole run's time. ``--full`` also times one plain ``dan train CONFIG``
process.

    DAN_DATA=../shared/data python bench/time_to_accuracy.py --repeats 3
    DAN_DATA=../shared/data python bench/time_to_accuracy.py --metric acc_image --target 0.995 --baseline
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, command, median, median_time_to_target, print_table, write_result  # noqa: E402

TARGET = 0.993
LIMIT_S = 30.0


def metric_value(result: Any, metric: str) -> float:
    """The fused accuracy (``acc``) or modality ``m``'s head accuracy (``acc_<m>``) of an evaluation."""
    if metric == "acc":
        return float(result.acc)
    modality = metric.removeprefix("acc_")
    if modality not in result.modality_acc:
        sys.exit(f"--metric {metric}: the model has no {modality!r} head; use acc or one of "
                 f"{', '.join('acc_' + m for m in result.modality_acc)}")
    return float(result.modality_acc[modality])


def child(config: str, overrides: list[str], device: str, threads: int, target: float, metric: str) -> None:
    """One timed run; prints one JSON line per phase (``t`` is ``time.time()`` at its end)."""
    from common import make_recipe, set_threads

    from dan.config import to_dict
    from dan.engine import trainer as T
    from dan.engine.evaluate import evaluate
    from dan.engine.test_time import with_tta

    set_threads(threads)
    print(json.dumps({"phase": "imported", "t": time.time()}), flush=True)
    recipe = make_recipe(config, overrides, device, threads)
    test = recipe.loader(recipe.task.splits["test"])
    scored = with_tta(recipe.task.model, to_dict(recipe.cfg.eval.tta))
    print(json.dumps({"phase": "ready", "t": time.time()}), flush=True)
    for epoch in range(recipe.cfg.train.epochs):
        recipe.train_epoch()
        recipe.task.end_epoch(recipe, recipe.meter.means())
        recipe.epoch, recipe.batch_in_epoch, recipe.meter = epoch + 1, 0, T.LossMeter()
        trained = time.time()
        result = evaluate(scored, test, recipe.task.model.num_classes, recipe.task.modalities, recipe.info.device)
        line = {
            "phase": "epoch",
            "epoch": epoch + 1,
            "t": time.time(),
            "trained_t": trained,
            "test_acc": metric_value(result, metric),
        }
        print(json.dumps(line), flush=True)
        if line["test_acc"] >= target:
            break


def timed_run(args: Any, seed: int) -> dict[str, Any]:
    """Spawn one child (config seed ``seed``) and turn its phase stamps into seconds since the spawn."""
    cmd = [sys.executable, __file__, "--child", "--config", args.config, "--device", args.device]
    cmd += ["--threads", str(args.threads), "--target", str(args.target), "--metric", args.metric]
    cmd += [f"seed={seed}", *args.overrides]
    start = time.time()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    )
    if proc.returncode:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    phase = {x["phase"]: x["t"] - start for x in lines if x["phase"] != "epoch"}
    epochs = [
        {
            "epoch": x["epoch"],
            "s": x["t"] - start,
            "train_done_s": x["trained_t"] - start,
            "test_acc": x["test_acc"],
        }
        for x in lines
        if x["phase"] == "epoch"
    ]
    hit = next((e for e in epochs if e["test_acc"] >= args.target), None)
    return {
        "seed": seed,
        "import_s": phase["imported"],
        "ready_s": phase["ready"],
        "epochs": epochs,
        "reached": hit is not None,
        "time_to_accuracy_s": hit["s"] if hit else None,
        "final_test_acc": epochs[-1]["test_acc"] if epochs else None,
    }


def baseline_run(args: Any, seed: int) -> dict[str, Any]:
    """One plain-CNN process (bench/plain_cnn.py, seed ``seed``) timed from its spawn to the target."""
    script = Path(__file__).resolve().parent / "plain_cnn.py"
    cmd = [sys.executable, str(script), "--child", str(seed), "--target", str(args.target)]
    cmd += ["--threads", str(args.threads), *(["--epochs", "1"] if args.quick else [])]
    start = time.time()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    )
    if proc.returncode:
        sys.exit(f"plain CNN failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    wall = time.time() - start
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    reached = r["reached_time"] is not None
    return {
        "seed": seed,
        "test_acc_per_epoch": r["test_acc_per_epoch"],
        "reached": reached,
        "time_to_accuracy_s": r["reached_time"] - start if reached else None,
        "wall_s": wall,
    }


def compare(median_s: float | None, base: list[dict[str, Any]]) -> dict[str, Any]:
    """The baseline's median time to the target and the ratio ``median_s / baseline median``. When more than
    half of the baseline runs never reach the target, their median is unknown but exceeds the median of
    ``time to target, else the whole run's wall time``, so ``ratio_at_most`` bounds the ratio from above."""
    base_median = median_time_to_target([r["time_to_accuracy_s"] for r in base])
    lower = median([r["time_to_accuracy_s"] if r["reached"] else r["wall_s"] for r in base])
    return {
        "median_s": base_median,
        "ratio": median_s / base_median if median_s is not None and base_median is not None else None,
        "ratio_at_most": median_s / lower if median_s is not None and base_median is None else None,
    }


def full_run(args: Any) -> dict[str, Any]:
    """One ordinary ``dan train CONFIG`` process (validation, checkpoints, best-checkpoint test)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "dan.cli", "train", args.config, "logger=none", "quiet=true"]
        cmd += [
            f"device={args.device}",
            f"train.num_threads={args.threads}",
            f"output_dir={out}",
            "run_name=r",
        ]
        cmd += args.overrides
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode:
            sys.exit(f"dan train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        summary = json.loads((Path(out) / "r" / "results.json").read_text())["summary"]
    return {
        "command": " ".join(cmd[2:]),
        "wall_s": wall,
        "test_acc": summary["test/acc"],
        "epochs": summary["epochs"],
    }


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--config", default="avmnist_fast")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--metric", default="acc", help="acc (fused) or acc_<modality> (that head)")
    parser.add_argument("--baseline", action="store_true", help="also time the plain CNN (bench/plain_cnn.py)")
    parser.add_argument("--full", action="store_true", help="also time one plain `dan train CONFIG` process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    if args.child:
        child(args.config, args.overrides, args.device, args.threads, args.target, args.metric)
        return
    if args.quick:
        args.repeats = 1
        args.overrides = ["train.epochs=1", *args.overrides]
    runs = []
    for i in range(args.repeats):
        runs.append(timed_run(args, seed=i))
        r = runs[-1]
        print(
            f"run {i + 1}: ready {r['ready_s']:.1f} s, reached={r['reached']} at {r['time_to_accuracy_s']} s, "
            f"accs {[round(e['test_acc'], 4) for e in r['epochs']]}",
            flush=True,
        )
    result: dict[str, Any] = {
        "config": args.config,
        "overrides": args.overrides,
        "device": args.device,
        "threads": args.threads,
        "metric": args.metric,
        "target_acc": args.target,
        "target_s": LIMIT_S,
        "runs": runs,
        "all_reached": all(r["reached"] for r in runs),
        "median_s": median_time_to_target([r["time_to_accuracy_s"] for r in runs]),
        "command": command(),
    }
    if args.full:
        result["full_run"] = full_run(args)
    if args.baseline:
        base = [baseline_run(args, seed=i) for i in range(args.repeats)]
        result["baseline"] = {"model": "bench/plain_cnn.py", "runs": base, **compare(result["median_s"], base)}
    rows = [
        {
            "run": i + 1,
            "ready_s": r["ready_s"],
            "epochs": len(r["epochs"]),
            "test_acc": r["final_test_acc"],
            "time_to_acc_s": r["time_to_accuracy_s"] if r["reached"] else "not reached",
        }
        for i, r in enumerate(runs)
    ]
    print_table(rows)
    print(f"median {result['median_s']} s to test {args.metric} >= {args.target}")
    if args.baseline:
        b = result["baseline"]
        for r in b["runs"]:
            print(f"plain CNN seed {r['seed']}: reached={r['reached']} at {r['time_to_accuracy_s']} s, "
                  f"accs {r['test_acc_per_epoch']}")
        print(f"plain CNN median {b['median_s']} s; {args.config} / plain CNN = {b['ratio']} "
              f"(at most {b['ratio_at_most']}; goal <= 0.5)")
    if args.full:
        f = result["full_run"]
        print(f"full `dan train`: {f['wall_s']:.1f} s wall, test acc {f['test_acc']:.4f}")
    name = "time_to_accuracy" if args.metric == "acc" else f"time_to_accuracy_{args.metric}"
    print("wrote", write_result(name, result, args.out, quick=args.quick))


if __name__ == "__main__":
    main()
