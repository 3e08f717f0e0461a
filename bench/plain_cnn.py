"""Baseline: a plain PyTorch CNN on the offline MNIST split, the yardstick for dan's image tower.

conv 32-32-pool-64-64-pool (3x3, BatchNorm, ReLU), flatten, FC 128, dropout 0.5, FC 10; AdamW with a
one-cycle schedule peaking at ``--lr`` (default 1e-2), 12 epochs, batch 128, no augmentation, as issue 12
describes it. The issue names no learning rate; at one thread, seed 0, 1e-3 and 3e-3 peak at 99.30% and 99.45%
and 1e-2 reaches the issue's 99.55% (seeds 0 / 1 / 2: 99.55 / 99.55 / 99.35%), so the yardstick is the
strongest of the three (chosen on the test score, which can only flatter the baseline). At two threads
1e-2 peaks at 99.40 / 99.35 / 99.35% (docs/results.md). Trained on ``test[:7000]`` and scored on
``test[8000:]`` after every epoch (the clock stops the first time it reaches ``--target``; the score never
steers training). Inputs are standardised with the training images' mean and std.

    DAN_DATA=../shared/data python bench/plain_cnn.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LR = 1e-2


def plain_cnn() -> nn.Module:
    """The baseline network: ``[B, 1, 28, 28] -> [B, 10]`` logits."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(128, 10),
    )


def load(root: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Standardised ``train [7000, 1, 28, 28]``, labels, ``test [2000, 1, 28, 28]``, labels."""
    from dan.data.mnist import load_mnist
    from dan.paths import data_root

    images, labels = load_mnist(data_root(root), "test")
    x = images.float().div(255).unsqueeze(1)
    train, test = x[:7000], x[8000:]
    mean, std = train.mean(), train.std()
    return (train - mean) / std, labels[:7000].long(), (test - mean) / std, labels[8000:].long()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    model.train()
    return float((pred == y).float().mean())


def run(seed: int, epochs: int, target: float, root: str | None, lr: float = LR, stop_at_target: bool = False) -> dict:
    """Train one seed at one-cycle peak rate ``lr``; ``reached_time`` is the ``time.time()`` at which the
    test accuracy first reached ``target`` (None if never); ``stop_at_target`` ends training there."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    xtr, ytr, xte, yte = load(root)
    model = plain_cnn()
    steps = epochs * -(-len(xtr) // 128)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    g = torch.Generator().manual_seed(seed)
    accs, reached_at, reached_time, train_s = [], None, None, 0.0
    for _ in range(epochs):
        t = time.perf_counter()
        for idx in torch.randperm(len(xtr), generator=g).split(128):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        train_s += time.perf_counter() - t
        accs.append(accuracy(model, xte, yte))
        if reached_at is None and accs[-1] >= target:
            reached_at, reached_time = time.perf_counter() - started, time.time()
            if stop_at_target:
                break
    return {
        "seed": seed,
        "test_acc_per_epoch": [round(a, 4) for a in accs],
        "final_test_acc": accs[-1],
        "time_to_target_s": reached_at,
        "reached_time": reached_time,
        "train_s": round(train_s, 2),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--target", type=float, default=0.995)
    parser.add_argument("--lr", type=float, default=LR, help="one-cycle peak learning rate")
    parser.add_argument("--root", default=None, help="data root (default $DAN_DATA)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.set_threads(args.threads)
    if args.child is not None:  # one seed, stopped at the target, for bench/time_to_accuracy.py --baseline
        print(json.dumps(run(args.child, args.epochs, args.target, args.root, args.lr, stop_at_target=True)), flush=True)
        return
    if args.quick:
        args.repeats, args.epochs = 1, 1
    runs = [run(seed, args.epochs, args.target, args.root, args.lr) for seed in range(args.repeats)]
    for r in runs:
        print(json.dumps(r))
    result = {
        "model": "conv32-32-pool-64-64-pool, BN, FC128, dropout 0.5 (plain PyTorch)",
        "epochs": args.epochs,
        "lr": args.lr,
        "target_acc": args.target,
        "runs": runs,
        "final_test_acc_mean": sum(r["final_test_acc"] for r in runs) / len(runs),
        "time_to_target_median_s": common.median_time_to_target([r["time_to_target_s"] for r in runs]),
    }
    common.save("plain_cnn", args, result)


if __name__ == "__main__":
    main()
