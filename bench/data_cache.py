"""Benchmark: build the offline AV-MNIST cache from $DAN_DATA, then reload it. Prints and writes JSON.

DAN_DATA=../shared/data python bench/data_cache.py --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from dan.data.avmnist import build_avmnist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, print_table, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", default="clean", choices=["clean", "hard"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    builds, reloads = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            cfg = {"cache_dir": cache, "variant": args.variant}
            t0 = time.perf_counter()
            splits = build_avmnist(cfg)
            builds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            build_avmnist(cfg)
            reloads.append(time.perf_counter() - t0)
    result = {
        "variant": args.variant,
        "images": sum(s.info["num_images"] for s in splits.values()),
        "recordings": sum(s.info["num_recordings"] for s in splits.values()),
        "pairs": {k: len(v) for k, v in splits.items()},
        "build_s": builds,
        "reload_s": reloads,
        "build_median_s": median(builds),
        "reload_median_s": median(reloads),
        "command": "python " + " ".join(sys.argv),
    }
    print_table(
        [
            {
                "step": "build",
                "median_s": result["build_median_s"],
                "runs_s": ", ".join(f"{t:.3f}" for t in builds),
            },
            {
                "step": "reload",
                "median_s": result["reload_median_s"],
                "runs_s": ", ".join(f"{t:.3f}" for t in reloads),
            },
        ]
    )
    print("wrote", write_result(f"data_cache_{args.variant}", result, args.out))


if __name__ == "__main__":
    main()
