"""Benchmark: the training step of a config with one convolutional tower's feature maps stored channels-last
(``model.towers.<tower>.channels_last=true``) against the same step with contiguous (NCHW) feature maps, in
the same process. Both recipes start from the same weights; their logits on one batch in eval mode are
compared first (the layout must not change the results beyond float rounding).

Windows of the two layouts alternate, so load on the machine hits both alike; the reported step time is the
median over ``--repeats`` windows.

    DAN_DATA=../shared/data python bench/memory_format.py                       # audio_only's audio tower
    DAN_DATA=../shared/data python bench/memory_format.py --cases audio_only:audio avmnist_fast:image
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LAYOUTS = ("contiguous", "channels_last")
PARITY_TOLERANCE = 1e-4


def logits_gap(a: Any, b: Any, batch: dict[str, torch.Tensor]) -> float:
    """Max abs difference of the fused logits ``[B, num_classes]`` of two prepared recipes on ``batch``."""
    a.model.eval(), b.model.eval()
    with torch.no_grad():
        gap = (a.model(batch).logits - b.model(batch).logits).abs().max().item()
    a.model.train(), b.model.train()
    return gap


def measure(case: str, args: Any) -> dict[str, Any]:
    """Alternating windows of both layouts for ``case`` = ``CONFIG:TOWER``."""
    config, tower = case.split(":")
    recipes = {
        layout: common.make_recipe(
            config,
            ["train.epochs=1000", f"model.towers.{tower}.channels_last={layout == 'channels_last'}", *args.overrides],
            args.device,
            args.threads,
        )
        for layout in LAYOUTS
    }
    recipes["channels_last"].model.load_state_dict(recipes["contiguous"].model.state_dict())
    batches = {layout: common.train_batches(r) for layout, r in recipes.items()}
    gap = logits_gap(recipes["contiguous"], recipes["channels_last"], next(batches["contiguous"]))
    if gap > PARITY_TOLERANCE:
        sys.exit(f"{case}: channels-last logits differ from contiguous by {gap:.3g} (tolerance {PARITY_TOLERANCE})")
    windows: dict[str, list[dict[str, float]]] = {layout: [] for layout in LAYOUTS}
    for _ in range(args.repeats):
        for layout in LAYOUTS:
            windows[layout].append(
                common.time_steps(recipes[layout].optimise, batches[layout], args.steps, args.warmup, args.device)
            )
    runs = {layout: [1000 * w["seconds"] / w["steps"] for w in wins] for layout, wins in windows.items()}
    step_ms = {layout: common.median(ms) for layout, ms in runs.items()}
    return {
        "case": case,
        "batch_size": recipes["contiguous"].task.train_batches.batch_size,
        "logits_max_abs_diff": gap,
        "step_ms": step_ms,
        "step_ms_runs": runs,
        "speedup": step_ms["contiguous"] / step_ms["channels_last"],
    }


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--cases", nargs="+", default=["audio_only:audio"], help="CONFIG:TOWER pairs")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="alternating windows per layout")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides for both layouts")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.repeats = 2, 1, 1
        args.overrides = ["train.batch_size=16", *args.overrides]
    common.set_threads(args.threads)
    results = [measure(c, args) for c in args.cases]
    common.print_table(
        [
            {
                "case": r["case"],
                "contiguous_ms": r["step_ms"]["contiguous"],
                "channels_last_ms": r["step_ms"]["channels_last"],
                "speedup": r["speedup"],
                "logits_diff": r["logits_max_abs_diff"],
            }
            for r in results
        ]
    )
    common.save("memory_format", args, {"steps": args.steps, "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
