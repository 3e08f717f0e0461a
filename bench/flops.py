"""Benchmark: achieved GFLOP/s of dan's training step as a share of the machine's sgemm peak, both
measured in this run, and the profiler's top operators of the step (what stands between the two).

FLOPs of one step (forward + backward; matmuls and convolutions) come from
``torch.utils.flop_counter.FlopCounterMode``; the peak is the best rate of large fp32 ``torch.mm``
calls at the same thread count.

    DAN_DATA=../shared/data python bench/flops.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGET_SHARE = 0.5
GEMM_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::cudnn_convolution",
    "aten::_convolution",
)


def sgemm_peak(device: str, sizes: list[int], repeats: int) -> dict[str, Any]:
    """Best fp32 ``torch.mm`` rate over square sizes: ``{"gflops": best, "by_size": {n: gflops}}``."""
    by_size = {}
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        torch.mm(a, b)
        common.sync(device)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b)
            common.sync(device)
            best = min(best, time.perf_counter() - t)
        by_size[n] = 2 * n**3 / best / 1e9
    return {"gflops": max(by_size.values()), "by_size": by_size}


def step_flops(recipe: Any, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one training step (forward + backward) on ``batch``."""
    with FlopCounterMode(display=False) as counter:
        recipe.optimise(batch)
    return int(counter.get_total_flops())


def top_ops(recipe: Any, batches: Any, steps: int, device: str, limit: int = 12) -> list[dict[str, Any]]:
    """The operators with most self time over ``steps`` profiled steps, per step."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            recipe.optimise(next(batches))
        common.sync(device)
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        {
            "op": e.key,
            "ms_per_step": getattr(e, attr) / 1000 / steps,
            "share": getattr(e, attr) / total,
            "gemm": e.key in GEMM_OPS,
        }
        for e in events[:limit]
    ] + [
        {
            "op": "(gemm-like ops, all)",
            "share": sum(getattr(e, attr) for e in events if e.key in GEMM_OPS) / total,
        }
    ]


def measure(
    config: str, args: Any, peak: float, compiled: bool = False, flops: int | None = None
) -> dict[str, Any]:
    """Step time and achieved GFLOP/s of ``config``'s training step; ``compiled`` sets ``train.compile=true``
    and reuses the eager step's ``flops`` (the same math; the counter does not see inside compiled graphs)."""
    extra = ["train.compile=true"] if compiled else []
    recipe = common.make_recipe(
        config, ["train.epochs=1000", *extra, *args.overrides], args.device, args.threads
    )
    batches = common.train_batches(recipe)
    if flops is None:
        flops = step_flops(recipe, next(batches))
    windows = [
        common.time_steps(recipe.optimise, batches, args.steps, args.warmup, args.device)
        for _ in range(args.repeats)
    ]
    step_s = common.median([w["seconds"] / w["steps"] for w in windows])
    achieved = flops / step_s / 1e9
    return {
        "config": config + (" (train.compile=true)" if compiled else ""),
        "batch_size": recipe.task.train_batches.batch_size,
        "step_flops": flops,
        "step_gflop": flops / 1e9,
        "step_ms": 1000 * step_s,
        "achieved_gflops": achieved,
        "share_of_peak": achieved / peak,
        "top_ops": top_ops(recipe, batches, args.profile_steps, args.device),
    }


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--configs", nargs="+", default=["avmnist_concat_offline", "avmnist_fast"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the train.compile=true variants"
    )
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.repeats, args.profile_steps, args.sizes = 2, 1, 1, 1, [512]
        args.compile = False
        args.overrides = ["train.batch_size=32", *args.overrides]
    common.set_threads(args.threads)
    peak = sgemm_peak(args.device, args.sizes, 3 if args.quick else 10)
    print(f"sgemm peak {peak['gflops']:.1f} GFLOP/s ({args.threads} threads, {args.device})")
    results = []
    for config in args.configs:
        results.append(measure(config, args, peak["gflops"]))
        if args.compile:
            results.append(measure(config, args, peak["gflops"], True, results[-1]["step_flops"]))
    # the peak again after the runs: a busy machine shows up as two different peaks
    peak_after = sgemm_peak(args.device, args.sizes, 3 if args.quick else 10)
    for r in results:
        print(f"\n{r['config']}: top ops per step")
        common.print_table([{k: v for k, v in op.items() if k != "gemm"} for op in r["top_ops"]])
    print()
    common.print_table(
        [
            {
                k: r[k]
                for k in ("config", "batch_size", "step_gflop", "step_ms", "achieved_gflops", "share_of_peak")
            }
            for r in results
        ]
    )
    result = {
        "sgemm_peak_gflops": peak["gflops"],
        "sgemm_by_size": peak["by_size"],
        "sgemm_peak_after_gflops": peak_after["gflops"],
        "target_share": TARGET_SHARE,
        "results": results,
    }
    common.save("flops", args, result)


if __name__ == "__main__":
    main()
