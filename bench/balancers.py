"""The balancer benchmark (issue 13): every balancer x {concat, attention} x seeds on two protocols with a
real imbalance, each cell its own ``dan train`` process (``dan grid``'s ``run_cell``: an interrupted sweep
continues), summarised into one Markdown table per protocol and, with ``--docs``, written into
docs/results.md between the ``balancer-benchmark`` markers.

    DAN_DATA=../shared/data python bench/balancers.py --seeds 0,1,2 --epochs 4 --out runs/results/balancers --docs

Protocols:

- ``hard``: the AV-MNIST hard variant (images at 25% of their PCA variance, audio at 0 dB SNR) on the
  offline splits (``avmnist_{concat,attention}_hard_offline``).
- ``speaker``: the default recipe's clean data with one speaker held out of training and validation, the
  first of the data root's speakers in sorted order (``dan cv``'s first fold), so the audio is a voice the
  model has never heard (``avmnist_{concat,attention}_offline``).

Each balancer runs with its method config (``balancer=<name>``: its paper's optimizer, and the fusion or
mid fusion it needs). A method that needs a fusion the column does not have is not run there (``n/a``);
``mla`` always runs on ``sum`` fusion. ``static+sgd`` is ``static`` under the SGD of the SGD-trained
methods' configs, their fair baseline (``static`` itself keeps the recipe's AdamW). Per cell: the fused test accuracy, the model's accuracy given one
modality alone (the other masked: the encoder's quality through the model), the Shapley contribution of
each modality to the test accuracy, and seconds per training epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dan.config import balancer_config_names, recipes_dir
from dan.engine.cv_command import folds
from dan.engine.grid_command import run_cell

PROTOCOLS = {
    "hard": {"concat": "avmnist_concat_hard_offline", "attention": "avmnist_attention_hard_offline"},
    "speaker": {"concat": "avmnist_concat_offline", "attention": "avmnist_attention_offline"},
}
FUSIONS = ("concat", "attention")
NEEDS = {"mmcosine": "concat", "reconboost": "concat", "mla": "sum"}  # the fusion a method's head needs
CHEAPER = {  # extra training a method does besides the run's epochs, cut to keep the sweep on a laptop
    "gradient_blend": ["balancer.estimate_epochs=2"],
    "umt": ["balancer.teacher_epochs=2"],
}
MARK = "balancer-benchmark"
SGD_BASELINE = "static+sgd"  # static under the SGD the SGD-trained methods' configs use: the fair baseline for them


def sgd_overrides() -> list[str]:
    """The optimizer of the SGD-trained methods' configs (``agm``'s), as overrides."""
    optimizer = OmegaConf.load(recipes_dir() / "configs" / "balancers" / "agm.yaml").optimizer
    return [f"optimizer.{k}={v}" for k, v in optimizer.items()]


def cells(balancers: list[str], fusion: str) -> list[tuple[str, str | None, list[str]]]:
    """``(balancer, reason it is not run or None, overrides)`` for one fusion column."""
    out = []
    for name in balancers:
        if name == SGD_BASELINE:
            out.append((name, None, ["balancer=static", f"model.fusion.name={fusion}", *sgd_overrides()]))
            continue
        need = NEEDS.get(name)
        if need == "concat" and fusion != "concat":
            out.append((name, "needs concat fusion with a linear head", []))
        elif need == "sum" and fusion != "concat":
            out.append((name, "runs once, on sum fusion (the row above)", []))
        else:
            extra = [] if need == "sum" else [f"model.fusion.name={fusion}"]
            out.append((name, None, [f"balancer={name}", *extra, *CHEAPER.get(name, [])]))
    return out


def protocol_overrides(protocol: str, config: str) -> list[str]:
    """The data overrides of a protocol: none for ``hard``; the first fold's for ``speaker``."""
    if protocol == "hard":
        return []
    groups = folds(config, [])
    first = sorted(groups)[0]
    return groups[first]


def held_out(protocol: str) -> str | None:
    """The speaker the ``speaker`` protocol holds out."""
    return sorted(folds(PROTOCOLS["speaker"]["concat"], []))[0] if protocol == "speaker" else None


def sweep(protocol: str, balancers: list[str], seeds: list[str], epochs: int, out: Path) -> list[dict[str, Any]]:
    """Run (or read) every cell of ``protocol``; one row per balancer x fusion x seed."""
    rows = []
    for fusion in FUSIONS:
        config = PROTOCOLS[protocol][fusion]
        data = protocol_overrides(protocol, config)
        for name, reason, overrides in cells(balancers, fusion):
            for seed in seeds:
                shown = "sum" if NEEDS.get(name) == "sum" and reason is None else fusion
                row: dict[str, Any] = {"protocol": protocol, "fusion": shown, "balancer": name, "seed": seed}
                if reason is not None:
                    rows.append({**row, "skipped": reason})
                    continue
                fixed = [*data, *overrides, f"train.epochs={epochs}"]
                result = run_cell(config, {"seed": seed}, fixed, out / protocol, name=f"{fusion}__{name}__seed-{seed}")
                rows.append({**row, **result})
    return rows


def mean_std(values: list[float]) -> str:
    """``mean ± std`` in percent (sample std; ``mean`` alone for one value)."""
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def mean(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * statistics.fmean(values):.{digits}f}" if values else "-"


def table(rows: list[dict[str, Any]]) -> str:
    """One Markdown row per fusion x balancer, over seeds."""
    lines = [
        "| fusion | balancer | fused test acc | image alone | audio alone | Shapley image | Shapley audio | s / epoch | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["fusion"], row["balancer"]), []).append(row)
    for (fusion, name), group in groups.items():
        if any("skipped" in r for r in group):
            lines.append(f"| {fusion} | {name} | n/a: {group[0]['skipped']} | | | | | | |")
            continue
        done = [r for r in group if "test/acc" in r]
        failed = [r for r in group if "failed" in r]

        def values(key: str, runs: list[dict[str, Any]] = done) -> list[float]:
            return [float(r[key]) for r in runs if key in r]

        per_epoch = [float(r["train_seconds"]) / max(int(r["epochs"]), 1) for r in done if "train_seconds" in r]
        note = f" ({len(failed)} failed)" if failed else ""
        lines.append(
            f"| {fusion} | `{name}` | {mean_std(values('test/acc'))} | {mean(values('test/acc_without_audio'))} | "
            f"{mean(values('test/acc_without_image'))} | {mean(values('test/shapley_image'))} | "
            f"{mean(values('test/shapley_audio'))} | {mean(per_epoch, 1.0, 1)} | {len(done)}{note} |"
        )
    return "\n".join(lines)


def machines(rows: list[dict[str, Any]]) -> str:
    """The machines the cells' ``results.json`` name (``device_name``, ``device``, threads, AMP), most cells
    first, with their counts; a record older than that field counts as a machine it does not name."""
    counts: dict[str, int] = {}
    for row in rows:
        if "skipped" in row or "failed" in row:
            continue
        m = row.get("machine")
        name = (
            f"{m['device_name']} ({m['device']}, {m['threads']} thread(s){', AMP' if m['amp'] else ', fp32'})"
            if m else "a machine their results.json does not name"
        )
        counts[name] = counts.get(name, 0) + 1
    return " and ".join(f"{name} ({n} runs)" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def write_docs(docs: Path, text: str) -> None:
    """Replace what lies between ``<!-- balancer-benchmark:start -->`` and ``:end -->`` in ``docs``."""
    body = docs.read_text()
    start, end = f"<!-- {MARK}:start -->", f"<!-- {MARK}:end -->"
    if start not in body or end not in body:
        raise SystemExit(f"{docs} has no {start} ... {end} markers; add them where the tables belong")
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    docs.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default="hard,speaker", help="comma-separated: hard, speaker")
    parser.add_argument("--balancers", default=",".join([*balancer_config_names(), SGD_BASELINE]))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/results/balancers"))
    parser.add_argument("--docs", nargs="?", const=Path("docs/results.md"), type=Path, default=None,
                        help="write the tables into this file between the balancer-benchmark markers")
    args = parser.parse_args(argv)
    balancers = args.balancers.split(",")
    unknown = sorted(set(balancers) - {*balancer_config_names(), SGD_BASELINE})
    if unknown:
        parser.error(f"--balancers: no method config for {unknown}; valid: {', '.join(balancer_config_names())}")
    protocols = args.protocols.split(",")
    sections = []
    every: list[dict[str, Any]] = []
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            parser.error(f"--protocols: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        rows = sweep(protocol, balancers, args.seeds.split(","), args.epochs, args.out)
        every.extend(rows)
        speaker = held_out(protocol)
        title = "hard variant" if protocol == "hard" else f"speaker {speaker!r} held out (clean data)"
        sections.append(
            f"**{title}**, {args.epochs} epochs, seeds {args.seeds}, trained on {machines(rows)}:\n\n{table(rows)}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "balancers.json").write_text(json.dumps(every, indent=1))
    command = (
        f"DAN_DATA=../shared/data python bench/balancers.py --protocols {args.protocols} --seeds {args.seeds} "
        f"--epochs {args.epochs} --out {args.out} --docs"
    )
    text = f"```bash\n{command}\n```\n\n" + "\n\n".join(sections)
    print(text)
    if args.docs is not None:
        write_docs(args.docs, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
