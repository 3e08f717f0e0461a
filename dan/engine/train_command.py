"""``dan train CONFIG [key=value ...]``: validate the config, then run the recipe it names."""

from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from dan.config import load_config
from dan.engine.recipes import run_config
from dan.engine.trainer import TrainingInterrupted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CONFIG`` (a file or shipped config name), ``key=value`` overrides, ``--print-config``."""
    parser.add_argument(
        "config", help="config file, or the name of a config in recipes/configs (see `dan recipes`)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5 resume=runs/x/last.pt"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 on success, 128 + the signal's number after SIGTERM (143) or Ctrl-C (130) once the
    checkpoint is written (config and data errors surface as DanError: exit 2)."""
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    try:
        run_config(cfg)
    except TrainingInterrupted as exc:
        print(f"dan train: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
