"""``dan recipes``: list recipe scripts and the configs that use them."""

from __future__ import annotations

import argparse
import ast
import re

from omegaconf import OmegaConf

from dan.config import recipe_names, recipes_dir


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (lines joined; it ends at a period before a space, or a blank line), whole."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    match = re.search(r"^(.*?\.)(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def _summary(path_text: str) -> str:
    return first_sentence(ast.get_docstring(ast.parse(path_text)) or "")


def _comment(text: str) -> str:
    """The first sentence of a config's leading comment lines."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return first_sentence("\n".join(lines))


def listing() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``[(recipe, first sentence of its docstring, [(config, first sentence of its comment), ...]), ...]``."""
    root = recipes_dir()
    configs: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((root / "configs").glob("*.yaml")):
        text = path.read_text()
        recipe = OmegaConf.create(text).get("recipe", "fusion")
        configs.setdefault(str(recipe), []).append((path.stem, _comment(text)))
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
