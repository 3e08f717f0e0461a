"""``dan recipes``: list recipe scripts and the configs that use them."""

from __future__ import annotations

import argparse
import ast

from omegaconf import OmegaConf

from dan.config import recipe_names, recipes_dir


def _summary(path_text: str) -> str:
    doc = ast.get_docstring(ast.parse(path_text)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def listing() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``[(recipe, one-line description, [(config, first comment line), ...]), ...]``."""
    root = recipes_dir()
    configs: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((root / "configs").glob("*.yaml")):
        text = path.read_text()
        first = text.splitlines()[0] if text else ""
        recipe = OmegaConf.create(text).get("recipe", "fusion")
        configs.setdefault(str(recipe), []).append((path.stem, first.lstrip("# ").strip()))
    return [
        (name, _summary((root / f"{name}.py").read_text()), configs.get(name, [])) for name in recipe_names()
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments."""


def run(args: argparse.Namespace) -> int:
    """Print every recipe with its configs."""
    for name, summary, configs in listing():
        print(f"{name}: {summary}")
        for config, comment in configs:
            print(f"  {config:32s} {comment}")
    print(f"\nrun one with: dan train CONFIG [key=value ...]   (configs in {recipes_dir() / 'configs'})")
    return 0
