"""``dan data download|verify|info``."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dan.errors import DanError
from dan.paths import cache_root, data_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands of ``dan data``."""
    sub = parser.add_subparsers(dest="data_command", required=True)
    dl = sub.add_parser("download", help="download and check the official files")
    dl.add_argument("datasets", nargs="*", default=["mnist", "fsdd"], choices=["mnist", "fsdd"])
    dl.add_argument("--root", help="data root (default: $DAN_DATA, then datasets/)")
    dl.add_argument("--quiet", action="store_true", help="no progress bars")
    ver = sub.add_parser("verify", help="report which files match the official checksums")
    ver.add_argument("--root")
    info = sub.add_parser("info", help="counts per split, speakers, digits and cache state")
    info.add_argument("--root")
    info.add_argument("--build", action="store_true", help="build the AV-MNIST cache if it is missing")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("overrides", nargs="*", help="data config overrides, e.g. variant=hard pairs_per_image=4")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen ``dan data`` subcommand."""
    root = data_root(args.root)
    if args.data_command == "download":
        return _download(root, args.datasets, progress=not args.quiet)
    if args.data_command == "verify":
        return _verify(root)
    return _info(root, args)


def _download(root: Path, datasets: list[str], progress: bool) -> int:
    from dan.data import fsdd, mnist

    for name in dict.fromkeys(datasets):
        if name == "mnist":
            paths = mnist.download_mnist(root, progress=progress)
        else:
            paths = [fsdd.download_fsdd(root, progress=progress)]
        for p in paths:
            print(f"{name}: {p}")
    return 0


def _verify(root: Path) -> int:
    from dan.data import mnist

    checks = mnist.verify_mnist(root)
    print(f"data root: {root}")
    for c in checks:
        print(f"  {c.status:9s} {c.path}")
    return 0


def _info(root: Path, args: argparse.Namespace) -> int:
    from dan.data import fsdd, mnist
    from dan.data.avmnist import AVMnistConfig, build_avmnist

    report: dict[str, Any] = {"data_root": str(root), "cache_root": str(cache_root())}
    mnist_counts: dict[str, Any] = {}
    for split in mnist.MNIST_SPLITS:
        try:
            _, labels = mnist.load_mnist(root, split)
            mnist_counts[split] = {"items": len(labels), "per_digit": _histogram(labels.tolist())}
        except DanError as exc:
            mnist_counts[split] = {"missing": str(exc).splitlines()[0]}
    report["mnist"] = mnist_counts
    try:
        recs = fsdd.index_recordings(fsdd.fsdd_dir(root))
        report["fsdd"] = {
            "recordings": len(recs),
            "speakers": dict(sorted(Counter(r.speaker for r in recs).items())),
            "per_digit": _histogram([r.digit for r in recs]),
            "official_split": {s: len(fsdd.select_recordings(recs, s)) for s in fsdd.FSDD_SPLITS},
        }
    except DanError as exc:
        report["fsdd"] = {"missing": str(exc).splitlines()[0]}

    data_cfg = OmegaConf.to_container(OmegaConf.from_dotlist(args.overrides)) if args.overrides else {}
    if args.root:
        data_cfg["root"] = args.root
    cfg = AVMnistConfig.from_dict(data_cfg)
    report["avmnist"] = {"variant": cfg.variant, "splits": {k: dict(v) for k, v in cfg.splits.items()}}
    if args.build:
        splits = build_avmnist(cfg)
        report["avmnist"]["cache_file"] = next(iter(splits.values())).info["cache_file"]
        report["avmnist"]["manifest_hash"] = next(iter(splits.values())).manifest_hash
        report["avmnist"]["pairs"] = {k: len(v) for k, v in splits.items()}
    else:
        cached = sorted((cache_root(cfg.cache_dir) / "avmnist").glob("*.pt"))
        report["avmnist"]["cache_files"] = [str(p) for p in cached] or "none yet (use --build)"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def _histogram(values: list[int]) -> dict[int, int]:
    return dict(sorted(Counter(values).items()))


def _print_report(report: dict[str, Any], indent: int = 0) -> None:
    for key, value in report.items():
        if isinstance(value, dict):
            print(" " * indent + f"{key}:")
            _print_report(value, indent + 2)
        else:
            print(" " * indent + f"{key}: {value}")
