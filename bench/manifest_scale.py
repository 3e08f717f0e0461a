"""Benchmark: one epoch of the fusion recipe on a generated manifest dataset larger than any in-memory
copy would comfortably hold, with bounded memory.

The data (written once into ``--dir``, by a separate process so its memory is not counted): ``N`` samples,
each a 28x28 uint8 image (warped seven-segment glyphs, rows of one memory-mapped ``images.npy``
``[N, 1, 28, 28]``) and a 64-float vector (rows of ``vectors.npy`` ``[N, 64]``), named by a CSV manifest
of ``row,label``. A fresh process then builds the ``manifest`` dataset (both modalities read memory-mapped
through the ``tensor`` reader's ``array``, normalised per batch), prepares the fusion recipe's task in the
engine, and runs exactly one epoch of ``Engine.optimise`` steps, timing how long each step waits for its
batch. Reports the peak RSS of that process (``ru_maxrss``: file pages of the memory maps it touched
included) and the data-loader share of step time.

    python bench/manifest_scale.py --samples 1000000
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RSS_TARGET_GB = 2.0
LOADER_TARGET = 0.05
CHUNK = 50_000


def generate(folder: Path, n: int, seed: int = 0) -> None:
    """Write ``images.npy``, ``vectors.npy`` and ``manifest.csv`` for ``n`` samples (chunked, bounded memory)."""
    import numpy as np
    import torch

    from dan.data.synthetic import render_images

    folder.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 1, 28, 28))
    vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, 64))
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 64, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    for start in range(0, n, CHUNK):
        y = labels[start : start + CHUNK]
        images[start : start + len(y), 0] = (render_images(y, g, 0.15) * 255).round().byte().numpy()
        vectors[start : start + len(y)] = (centres[y] + 2.0 * torch.randn(len(y), 64, generator=g)).numpy()
    images.flush()
    vectors.flush()
    with (folder / "manifest.csv").open("w") as f:
        f.write("row,label\n")
        f.writelines(f"{i},{c}\n" for i, c in enumerate(labels.tolist()))
    (folder / "done.json").write_text(json.dumps({"samples": n}))


def config(folder: Path, batch_size: int) -> Path:
    """A fusion config over the generated manifest (written beside it)."""
    path = folder / "scale.yaml"
    path.write_text(
        f"""recipe: fusion
logger: none
quiet: true
data:
  name: manifest
  path: {folder / "manifest.csv"}
  val_fraction: 0.01
  test_fraction: 0.01
  modalities:
    image: {{reader: tensor, array: images.npy, column: row, normalize: global}}
    vector: {{reader: tensor, array: vectors.npy, column: row}}
model:
  num_classes: 10
  dim: 32
  towers:
    image: {{name: image_cnn, channels: [8, 16], grid: 2, channels_last: true}}
    vector: {{name: vector_mlp, features: 64, hidden: 64}}
  trunk: {{name: mlp, share: true, depth: 1}}
  fusion: {{name: concat}}
optimizer: {{name: adamw, lr: 0.003}}
train:
  epochs: 1
  batch_size: {batch_size}
"""
    )
    return path


def child(folder: Path, batch_size: int, threads: int, steps: int | None) -> None:
    """Build the data, prepare the engine, train one epoch; print one JSON line."""
    common.set_threads(threads)
    started = time.perf_counter()
    engine = common.make_recipe(str(config(folder, batch_size)), [], "cpu", threads)
    ready = time.perf_counter()
    batches = engine.task.train_batches
    batches.set_epoch(0)
    n = len(batches) if steps is None else min(steps, len(batches))
    window = common.time_steps(engine.optimise, iter(batches), n, 0, "cpu")
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        json.dumps(
            {
                "train_samples": len(engine.task.splits["train"]),
                "steps": n,
                "epoch_steps": len(batches),
                "setup_s": round(ready - started, 2),
                "epoch_s": round(window["seconds"], 2),
                "loader_s": round(window["loader_s"], 3),
                "loader_share": window["loader_s"] / window["seconds"],
                "samples_per_s": n * batch_size / window["seconds"],
                "peak_rss_gb": round(rss_gb, 3),
                "final_train_loss": engine.meter.means().get("fused"),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/dan-bench-manifest"))
    parser.add_argument("--child", action="store_true", help=argparse_hidden())
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.steps = 20_000, 20
    folder = args.dir / str(args.samples)
    if args.child:
        child(folder, args.batch_size, args.threads, args.steps)
        return
    if not (folder / "done.json").exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate-only", str(folder), str(args.samples)], check=True)
        print(f"generated {args.samples} samples in {time.perf_counter() - t:.0f} s")
    cmd = [sys.executable, __file__, "--child", "--samples", str(args.samples), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--dir", str(args.dir)]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(
        samples=args.samples,
        batch_size=args.batch_size,
        rss_target_gb=RSS_TARGET_GB,
        loader_share_target=LOADER_TARGET,
    )
    common.print_table([result])
    common.save("manifest_scale", args, result)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--generate-only":
        generate(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
