"""The shape of the project the engine issue asked for, checked on the source: recipes import only dan
(never another recipe), tests never import a recipe, and no recipe writes loop code of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "recipes").glob("*.py") if p.name != "__init__.py")
# what only dan.engine may do: seed, build optimizers, write checkpoints, handle signals, loop over epochs
LOOP_NAMES = {
    "seed_everything", "build_optimizer", "build_scheduler", "save_checkpoint", "CheckpointManager",
    "StopSignals", "EarlyStopping", "check_finite", "clip_gradients", "wrap_model", "build_logger",
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(("." * node.level) + (node.module or ""))
    return out


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_import_only_dan_and_write_no_loop(path: Path) -> None:
    mods = _imports(path)
    third_party = {"torch", "omegaconf", "__future__", "sys", "typing", "collections", "dataclasses", "math", "pathlib"}
    for m in mods:
        top = m.split(".")[0]
        assert top == "dan" or top in third_party, f"{path.name} imports {m}"
        assert not m.startswith(("dan.recipes", "recipes", ".")), f"{path.name} imports another recipe: {m}"
    names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
    assert not names & LOOP_NAMES, f"{path.name} does loop work of its own: {sorted(names & LOOP_NAMES)}"
    assert "def main(cfg" in path.read_text() and "Engine(cfg).run(" in path.read_text()


def test_tests_never_import_a_recipe() -> None:
    for path in sorted((REPO / "tests").glob("*.py")):
        for m in _imports(path):
            assert not m.startswith(("recipes", "dan.recipes")), f"{path.name} imports {m}"
        assert "load_recipe(" not in path.read_text() or path.name == "test_layout.py", path.name
