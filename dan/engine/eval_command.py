"""``dan eval CHECKPOINT [key=value ...]``: accuracy (fused, per modality, per class), confusion matrix,
accuracy with each modality removed and against noise; JSON + PNG plots in a new folder beside the
checkpoint (or ``--out DIR``).

The data is normalised with the checkpoint's stored preprocessing, and only the evaluated split is read,
so ``data.root=PATH`` may point at a root that holds nothing but test files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dan.config import from_dict, merge, to_dict, validate
from dan.data import TensorBatchLoader, build_data
from dan.engine.distributed import select_device
from dan.engine.evaluate import contributions, evaluate, robustness
from dan.engine.run_folder import claim_free_folder
from dan.engine.test_time import with_tta
from dan.errors import ConfigError
from dan.logging.plots import plot_classification_report

ALLOWED = ("data.", "eval.", "device=", "seed=", "train.eval_batch_size=")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CHECKPOINT``, data/eval ``key=value`` overrides, ``--out DIR``."""
    parser.add_argument("checkpoint", help="a .pt file written by dan train (best.pt or last.pt)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="data.root=PATH data.splits.test.mnist=... eval.split=val eval.noise_levels=[0,1]",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for eval_<split>.json and the plots (default: a new folder eval-<checkpoint>-<split> beside "
        "the checkpoint, -2, -3, ... when taken)",
    )


def evaluate_checkpoint(
    checkpoint: str | Path, overrides: list[str], out: Path | None = None
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on its data config with ``overrides``; writes and returns the report.

    The report and plots go to ``out``, or by default to a new folder ``eval-<checkpoint stem>-<split>`` beside
    the checkpoint (``-2``, ``-3``, ... when an earlier evaluation took it): never over the training run's own
    test plots or an earlier evaluation's files."""
    from dan.api import load

    bad = [o for o in overrides if not o.startswith(ALLOWED)]
    if bad:
        raise ConfigError(
            f"dan eval overrides may only change {', '.join(a.rstrip('.=') for a in ALLOWED)}; got {bad}"
        )
    loaded = load(checkpoint)
    cfg = merge(to_dict(from_dict(loaded.config)), overrides)
    validate(cfg)
    device = select_device(cfg.device)
    num_classes = loaded.model.num_classes
    model = with_tta(loaded.model.to(device), to_dict(cfg.eval.tta))
    split_name = cfg.eval.split
    # the checkpoint's own normalisation, never statistics refitted on the new data
    splits = build_data(to_dict(cfg.data), preprocessing=loaded.preprocessing.spec, only=[split_name])
    if split_name not in splits:
        raise ConfigError(f"eval.split={split_name!r} is not a split of this data; pick one it holds")
    split = splits[split_name]

    def batches() -> TensorBatchLoader:
        return TensorBatchLoader(split, cfg.train.eval_batch_size, shuffle=False)

    mods = loaded.modalities
    result = evaluate(model, batches(), num_classes, mods, device)
    present = [m for m in mods if m in split.modalities]
    robust = robustness(
        model, batches, num_classes, present, device, cfg.eval.noise_levels, seed=cfg.seed
    )
    report = {
        "checkpoint": str(checkpoint),
        "split": split_name,
        "data_source": split.source,
        "manifest_hash": split.manifest_hash,
        "trained_on_manifest": loaded.manifest_hash,
        "tta": to_dict(cfg.eval.tta),
        **result.to_dict(),
        "acc_without": robust["without"],
        "contributions": contributions(
            model, batches, num_classes, present, device, full_acc=result.acc, without=robust["without"]
        ),
        "noise": robust["noise"],
    }
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    else:
        ckpt = Path(checkpoint)
        out = claim_free_folder(ckpt.parent / f"eval-{ckpt.stem}-{split_name}")
    (out / f"eval_{split_name}.json").write_text(json.dumps(report, indent=1))
    plots = plot_classification_report(result, robust, out, split_name, str(cfg.run_name))
    report["files"] = sorted([str(out / f"eval_{split_name}.json"), *(str(p) for p in plots.values())])
    return report


def run(args: argparse.Namespace) -> int:
    """Print a short summary; the full report is in the JSON file."""
    r = evaluate_checkpoint(args.checkpoint, list(args.overrides), Path(args.out) if args.out else None)
    src = " (SYNTHETIC data)" if r["data_source"] == "synthetic" else ""
    print(f"{r['split']} fused accuracy {r['acc']:.4f} on {r['num_samples']} samples{src}")
    for m, a in r["modality_acc"].items():
        print(
            f"  {m} head accuracy {a:.4f}; fused accuracy without {m}: {r['acc_without'].get(m, float('nan')):.4f}"
        )
    shares = r["contributions"]
    if shares:
        print(
            "  contributions (Shapley values of the fused accuracy): "
            + ", ".join(f"{k.removeprefix('shapley_')} {v:+.4f}" for k, v in shares.items() if k != "imbalance")
            + f"; imbalance degree {shares['imbalance']:.3f}"
        )
    for m, pts in r["noise"].items():
        print(f"  noise on {m}: " + ", ".join(f"std {p['std']:g} -> {p['acc']:.3f}" for p in pts))
    print("wrote " + ", ".join(r["files"]))
    return 0
