"""Finding and running recipe scripts (``recipes/<name>.py``, each defining ``main(cfg) -> dict``)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from dan.config import load_config, recipe_names, recipes_dir
from dan.errors import ConfigError, DanError


def load_recipe(name: str) -> ModuleType:
    """Import ``recipes/<name>.py`` (once) and return it; a ConfigError lists the recipes otherwise."""
    module_name = f"dan_recipe_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = recipes_dir() / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"recipe={name!r} is not valid; valid choices: {', '.join(recipe_names())}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise ConfigError(f"{path} defines no main(cfg) function; a recipe script must")
    return module


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """Run the recipe that ``cfg.recipe`` names; returns its final metrics."""
    return load_recipe(cfg.recipe).main(cfg)


def script_main(main: Callable[[DictConfig], dict[str, Any]], argv: Sequence[str] | None = None) -> int:
    """``python recipes/<name>.py --config CONFIG [key=value ...]``: parse, validate, run ``main``."""
    parser = argparse.ArgumentParser(description=(main.__module__ or "recipe"))
    parser.add_argument("--config", required=True, help="config file or shipped config name")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2")
    args = parser.parse_args(argv)
    try:
        main(load_config(args.config, args.overrides))
    except DanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))  # 130/143 after Ctrl-C/SIGTERM (TrainingInterrupted)
    return 0
