"""``dan cv CONFIG [CONFIG ...] --seeds 0,1,2 --out DIR``: group-disjoint cross-validation. Each held-out group
(leave-one-speaker-out on AV-MNIST: every speaker the data root holds, never a fixed list) is one fold; each
config is trained once per fold and seed in its own ``dan train`` process and tested on that fold's held-out
group. Prints, per config, the mean and standard deviation over folds x seeds of the fused accuracy and of
each head's, and writes every run's figures to ``DIR/cv.json``.

    dan cv avmnist_concat_offline image_only audio_only --seeds 0,1,2 --out runs/loso

Runs whose ``results.json`` exists are read, not re-run, so an interrupted sweep continues. ``--groups``
runs some folds only, so that one sweep can be split between processes or machines sharing ``--out``; a last
call without it reads every fold back into one table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from dan.config import load_config, to_dict
from dan.data import build_dataset
from dan.engine.grid_command import run_cell
from dan.errors import ConfigError


def folds(config: str, fixed: list[str]) -> dict[str, list[str]]:
    """``{group: data overrides holding it out}`` of ``config``'s dataset (reads only the file listing)."""
    dataset = build_dataset(to_dict(load_config(config, fixed).data))
    group_folds = getattr(dataset, "group_folds", None)
    if group_folds is None:
        raise ConfigError(
            f"data.name={type(dataset).__name__} has no groups to hold out; cross-validation needs a dataset "
            "with speakers or another group (avmnist, or a manifest with data.group set)"
        )
    return {g: [f"data.{k}={json.dumps(v)}" for k, v in changes.items()] for g, changes in group_folds().items()}


def select(available: dict[str, list[str]], groups: str | None) -> dict[str, list[str]]:
    """The folds of ``available`` named in the comma-separated ``groups`` (all of them when None), in the
    order the dataset gives; an unknown group raises a ConfigError listing the ones the data root holds."""
    if groups is None:
        return available
    wanted = [g.strip() for g in groups.split(",") if g.strip()]
    unknown = [g for g in wanted if g not in available]
    if unknown or not wanted:
        raise ConfigError(
            f"--groups {groups!r}: no such group {', '.join(unknown) or '(empty)'}; the data root holds "
            f"{', '.join(available)}; e.g. --groups {','.join(list(available)[:2])}"
        )
    return {g: o for g, o in available.items() if g in wanted}


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per test metric (``test/acc``, ``test/acc_<m>``) its mean and std over ``runs``."""
    keys = sorted({k for r in runs for k in r if k.startswith("test/acc")})
    return {k: mean_std([r[k] for r in runs if k in r]) for k in keys}


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per config, mean ± std (percent) per head."""
    heads = sorted({h for s in summary.values() for h in s})
    lines = ["| config | runs | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for config, s in summary.items():
        n = max((v["n"] for v in s.values()), default=0)
        cells = [f"{100 * s[h]['mean']:.2f} ± {100 * s[h]['std']:.2f}" if h in s else "—" for h in heads]
        lines.append(f"| {config} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CONFIG ...``, ``--seeds``, ``--set key=value`` (repeatable), ``--groups``, ``--out DIR``."""
    parser.add_argument("configs", nargs="+", help="config files or shipped config names")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--set", action="append", default=[], help="key=value applied to every run")
    parser.add_argument("--groups", default=None, help="comma-separated held-out groups to run (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs and cv.json")


def run(args: argparse.Namespace) -> int:
    """Run (or read back) every config x fold x seed, write ``OUT/cv.json``, print the table."""
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    for config in args.configs:
        stem = Path(config).stem
        for group, overrides in select(folds(config, args.set), args.groups).items():
            for seed in seeds:
                name = f"{stem}__heldout-{group}__seed-{seed}"
                row = run_cell(config, {"seed": seed}, [*args.set, *overrides], args.out, name)
                results.setdefault(stem, []).append({"heldout": group, **row})
    summary = {c: summarise([r for r in runs if "failed" not in r]) for c, runs in results.items()}
    command = " ".join(["dan", "cv", *sys.argv[2:]])
    (args.out / "cv.json").write_text(json.dumps({"command": command, "summary": summary, "runs": results}, indent=1))
    print(table(summary))
    failed = sum("failed" in r for runs in results.values() for r in runs)
    return 1 if failed else 0
