"""Benchmark: training throughput (pairs/s) of dan's training step against the plain reference loop of
bench/naive.py (same model and data, per-item Dataset + PIL/torchaudio transforms + DataLoader), in the
same process, plus the share of dan's step time spent waiting for the data loader.

Windows of dan and reference steps alternate, so load on the machine hits both alike; the reported rate is
the median over ``--repeats`` windows.

    DAN_DATA=../shared/data python bench/throughput.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from naive import inputs_match, naive_batches, naive_dataset, naive_step, plain_model  # noqa: E402

from dan.engine import trainer as T  # noqa: E402

TARGET_RATIO = 3.0
TARGET_LOADER_SHARE = 0.05
INPUT_TOLERANCE = 1e-4


def measure(config: str, args: Any) -> dict[str, Any]:
    """dan vs reference windows for one config."""
    recipe = common.make_recipe(config, ["train.epochs=1000", *args.overrides], args.device, args.threads)
    device = recipe.info.device
    batch_size = recipe.task.train_batches.batch_size
    dan_batches = common.train_batches(recipe)
    steps = {"dan": (recipe.optimise, dan_batches)}
    if args.compile:
        compiled = common.make_recipe(
            config, ["train.epochs=1000", "train.compile=true", *args.overrides], args.device, args.threads
        )
        steps["dan_compiled"] = (compiled.optimise, common.train_batches(compiled))
    torch.manual_seed(0)
    model = plain_model(recipe.cfg.model).to(device).train()
    opt = T.build_optimizer(model.parameters(), recipe.cfg.optimizer)
    dataset = naive_dataset(recipe.task.splits["train"])
    worst = inputs_match(recipe.task.splits["train"], dataset)
    if worst > INPUT_TOLERANCE:
        sys.exit(f"{config}: the reference loop's inputs differ from dan's by {worst:.3g} (tolerance "
                 f"{INPUT_TOLERANCE}): bench/naive.py does not build this config's features; extend NaiveAVMnist")
    ref_batches = {w: naive_batches(dataset, batch_size, w, device) for w in args.workers}
    ref_step = naive_step(model, opt)
    windows: dict[str, list[dict[str, float]]] = {
        **{name: [] for name in steps},
        **{f"reference_w{w}": [] for w in args.workers},
    }
    # the reference's model step fed dan's ready batches: the most any input pipeline could win back
    steps["reference_model_only"] = (ref_step, common.train_batches(recipe))
    windows["reference_model_only"] = []
    for _ in range(args.repeats):
        for name, (step, batches) in steps.items():
            windows[name].append(common.time_steps(step, batches, args.steps, args.warmup, args.device))
        for w in args.workers:
            windows[f"reference_w{w}"].append(
                common.time_steps(ref_step, ref_batches[w], args.steps, args.warmup, args.device)
            )
    loops = {}
    for name, wins in windows.items():
        rates = [batch_size * w["steps"] / w["seconds"] for w in wins]
        loops[name] = {
            "pairs_per_s": common.median(rates),
            "pairs_per_s_runs": rates,
            "loader_share": common.median([w["loader_s"] / w["seconds"] for w in wins]),
            "step_ms": 1000 * common.median([w["seconds"] / w["steps"] for w in wins]),
        }
    best_ref = max((f"reference_w{w}" for w in args.workers), key=lambda k: loops[k]["pairs_per_s"])
    return {
        "config": config,
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "inputs_max_abs_diff": worst,
        "loops": loops,
        "best_reference": best_ref,
        "ratio": loops["dan"]["pairs_per_s"] / loops[best_ref]["pairs_per_s"],
        "ratio_compiled": loops["dan_compiled"]["pairs_per_s"] / loops[best_ref]["pairs_per_s"]
        if "dan_compiled" in loops
        else None,
    }


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--configs", nargs="+", default=["avmnist_concat_offline", "avmnist_fast"])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="alternating windows per loop")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="reference DataLoader workers")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the train.compile=true loop"
    )
    parser.add_argument("overrides", nargs="*", help="config key=value overrides for dan's side")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.repeats, args.workers, args.compile = 2, 1, 1, [0], False
        args.overrides = ["train.batch_size=32", *args.overrides]
    common.set_threads(args.threads)
    results = [measure(c, args) for c in args.configs]
    rows = [
        {
            "config": r["config"],
            "loop": name,
            "pairs_per_s": loop["pairs_per_s"],
            "step_ms": loop["step_ms"],
            "loader_share_%": 100 * loop["loader_share"],
            "dan_x": r["loops"]["dan"]["pairs_per_s"] / loop["pairs_per_s"],
        }
        for r in results
        for name, loop in r["loops"].items()
    ]
    common.print_table(rows)
    result = {
        "steps": args.steps,
        "repeats": args.repeats,
        "target_ratio": TARGET_RATIO,
        "target_loader_share": TARGET_LOADER_SHARE,
        "results": results,
    }
    common.save("throughput", args, result)


if __name__ == "__main__":
    main()
