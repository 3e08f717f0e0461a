"""``dan grid CONFIG --grid key=v1,v2 ... --out DIR``: one config over a grid of overrides, each cell as its
own `dan train` process, and a table of the test accuracies of every cell (fused and per-modality heads).

    dan grid avmnist_concat_offline \
        --grid model.fusion.name=concat,attention,sum,gated,film \
        --grid balancer.name=static,uncertainty,gradnorm,gradient_blend,ogm_ge \
        --set train.epochs=4 --out runs/grid_clean

Cells whose `results.json` already exists are read, not re-run, so an interrupted sweep continues.
Writes `OUT/grid.json` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dan.errors import ConfigError


def parse_axis(spec: str) -> tuple[str, list[str]]:
    """``key=v1,v2`` -> (key, [v1, v2])."""
    key, sep, values = spec.partition("=")
    if not sep or not values:
        raise ConfigError(f"--grid {spec!r}: expected key=value1,value2,...")
    return key, values.split(",")


def cell_name(cell: dict[str, str]) -> str:
    """A run name for a cell: ``fusion-concat__balancer-static``."""
    return "__".join(
        f"{k.split('.')[-2] if k.endswith('.name') else k.split('.')[-1]}-{v}" for k, v in cell.items()
    )


def run_cell(
    config: str, cell: dict[str, str], fixed: list[str], out: Path, name: str | None = None
) -> dict[str, Any]:
    """Train one cell (``fixed`` then ``cell`` overrides) in its own process, or read its ``results.json``;
    its test and best-val metrics and the machine it trained on (None in a record older than that field).
    ``name`` is the run folder under ``out`` (default :func:`cell_name`)."""
    name = name or cell_name(cell)
    result = out / name / "results.json"
    if not result.exists():
        cmd = [
            sys.executable,
            "-m",
            "dan.cli",
            "train",
            config,
            *fixed,
            *(f"{k}={v}" for k, v in cell.items()),
            "quiet=true",
            f"output_dir={out}",
            f"run_name={name}",
            "overwrite=true",  # a cell without results.json was interrupted: run it again from the start
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            print(f"{name}: FAILED (exit {proc.returncode}); see {out / f'{name}.log'}", file=sys.stderr)
            return {"cell": cell, "failed": proc.returncode}
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    record = json.loads(result.read_text())
    summary = record["summary"]
    return {
        "cell": cell,
        "machine": record.get("machine"),
        "best_metric": record["config"]["train"]["early_stopping"]["metric"],
        **{
            k: v for k, v in summary.items() if k.startswith(("test/", "best_val", "epochs", "train_seconds"))
        },
    }


def metric_text(name: str, value: float | None) -> str:
    """The value of validation metric ``name`` for a table: accuracies and AUCs in percent, anything else
    (a loss, an EER) as it is."""
    if value is None:
        return "—"
    return f"{100 * value:.2f}" if name.split("/")[-1].startswith(("acc", "auc")) else f"{value:.4f}"


def best_cell(row: dict[str, Any], named: bool) -> str:
    """A row's ``best.pt`` metric value, preceded by the metric's name when ``named``."""
    name = row.get("best_metric") or "metric"
    text = metric_text(name, row.get("best_val"))
    return f"{name} {text}" if named else text


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one row per cell, test accuracy of the fused head and each modality head, then the
    value of ``train.early_stopping.metric`` that chose ``best.pt`` (named in the header when every cell
    ranks by the same metric, else in each cell)."""
    keys = list(rows[0]["cell"])
    heads = sorted({k for r in rows for k in r if k.startswith("test/acc")})
    metrics = {r.get("best_metric") for r in rows if "failed" not in r}
    shared = metrics.pop() if len(metrics) == 1 else None
    lines = [
        "| " + " | ".join([*keys, *heads, f"best.pt {shared or 'metric'}", "train s"]) + " |",
        "| " + " | ".join(["---"] * (len(keys) + len(heads) + 2)) + " |",
    ]
    for r in rows:
        accs = [f"{100 * r[h]:.2f}" if h in r else "failed" for h in heads]
        lines.append(
            "| "
            + " | ".join(
                [
                    *r["cell"].values(),
                    *accs,
                    best_cell(r, named=shared is None),
                    str(round(r.get("train_seconds", 0))),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CONFIG``, ``--grid key=v1,v2`` (repeatable), ``--set key=value`` (repeatable), ``--out DIR``."""
    parser.add_argument("config", help="config file or shipped config name")
    parser.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="key=value applied to every cell")
    parser.add_argument("--out", type=Path, required=True, help="folder of the cells' runs and grid.json")


def run(args: argparse.Namespace) -> int:
    """Run (or read back) every cell, write ``OUT/grid.json`` and print the Markdown table."""
    axes = [parse_axis(s) for s in args.grid]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [
        run_cell(args.config, dict(zip([k for k, _ in axes], values, strict=True)), args.set, args.out)
        for values in itertools.product(*[v for _, v in axes])
    ]
    (args.out / "grid.json").write_text(
        json.dumps(
            {"config": args.config, "set": args.set, "command": " ".join(["dan", "grid", *sys.argv[2:]]), "rows": rows},
            indent=1,
        )
    )
    print(table(rows))
    return 0
