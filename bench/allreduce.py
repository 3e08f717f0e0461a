"""Benchmark: latency of one gloo all-reduce of a model's gradient between torchrun CPU processes, alone,
to compare with the per-step cost of DDP in bench/scaling.py. Prints the median and p90.

    torchrun --standalone --nproc_per_node=2 bench/allreduce.py --numel 71982
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numel", type=int, default=71982, help="float32 values (avmnist_fast: 71,982)")
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    grad = torch.randn(args.numel)
    for _ in range(args.warmup):
        dist.all_reduce(grad)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        dist.all_reduce(grad)
        times.append(time.perf_counter() - t)
    times.sort()
    if dist.get_rank() == 0:
        median, p90 = 1e3 * times[len(times) // 2], 1e3 * times[int(0.9 * len(times))]
        print(f"all-reduce of {args.numel} floats, {dist.get_world_size()} ranks: median {median:.3f} ms, p90 {p90:.3f} ms")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
