"""The ``dan`` command. Each subcommand lives in the module that owns its job; this file only dispatches, and
imports a subcommand's module only when that subcommand runs (``dan --help`` and ``dan --version`` import no
torch)."""

from __future__ import annotations

import argparse
import importlib
import sys

from dan import __version__
from dan.errors import DanError

# subcommand -> (module, help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("dan.data.commands", "download, verify and describe datasets"),
    "train": ("dan.engine.train_command", "train a recipe config: dan train CONFIG [key=value ...]"),
    "eval": ("dan.engine.eval_command", "evaluate a checkpoint on any data root and split"),
    "predict": ("dan.engine.predict_command", "predict the class of inputs of any modality"),
    "recipes": ("dan.engine.recipes_command", "list recipes and their configs"),
    "cv": ("dan.engine.cv_command", "cross-validate configs over held-out groups (leave one speaker out)"),
    "grid": ("dan.engine.grid_command", "train one config over a grid of overrides and tabulate the results"),
    "verify": ("dan.engine.verify_command", "verify whether two inputs match (Siamese checkpoints)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; the subparser of ``command`` (only) gets its module's arguments."""
    parser = argparse.ArgumentParser(prog="dan", description="Multimodal two-tower fusion models.")
    parser.add_argument("--version", action="version", version=f"dan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dan`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DanError as exc:
        print(f"dan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dan recipes | head`: the reader left; nothing more to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
