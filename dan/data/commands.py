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
    ver = sub.add_parser(
        "verify",
        help="check a dataset's files: MNIST md5s, every FSDD recording read, any registered dataset built",
        description="dan data verify [DATASET] [key=value ...]: without DATASET, the MNIST and FSDD files of the "
        "data root; with one (mnist, fsdd, avmnist, manifest, folder, or a plugin's), that dataset's own file "
        "checks and each split built from its data.* keys. Exit 1 when anything fails.",
    )
    ver.add_argument("dataset", nargs="?", help="a registered dataset name (data.name)")
    ver.add_argument("overrides", nargs="*", help="the dataset's data.* keys, e.g. manifest=my.csv")
    ver.add_argument("--root", help="data root (default: $DAN_DATA, then datasets/)")
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
        return _verify(root, args)
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


def _verify(root: Path, args: argparse.Namespace) -> int:
    from dan.data.verify import verify_dataset, verify_fsdd_files, verify_mnist_files

    if args.dataset is None:
        print(f"data root: {root}")
        checks = [*verify_mnist_files(root), *verify_fsdd_files(root)]
    else:
        keys = [o.removeprefix("data.") for o in args.overrides]
        cfg = OmegaConf.to_container(OmegaConf.from_dotlist(keys)) if keys else {}
        assert isinstance(cfg, dict)
        cfg = {"name": args.dataset, **cfg, **({"root": args.root} if args.root else {})}
        checks = verify_dataset(cfg)
    for c in checks:
        print(f"  {'-- ' if c.absent else 'ok ' if c.ok else 'BAD'} {c.subject}: {c.detail}")
    bad, absent = sum(not c.ok for c in checks), sum(c.absent for c in checks)
    print(f"{len(checks) - bad - absent} checks passed, {bad} failed, {absent} files absent")
    return 1 if bad else 0


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
