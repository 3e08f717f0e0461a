"""The README's two commands find the real data the same way with and without ``$DAN_DATA``: the test command
(run as written, it sets no DAN_DATA) runs the real-data tests instead of skipping them, and the main
command's ``DAN_DATA=${DAN_DATA:-../shared/data}`` reaches the data from a fresh clone's root."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no ../shared/data beside the checkout")


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def _env_without_dan_data() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DAN_DATA"}


@needs_shared
def test_readme_test_command_finds_the_data_without_dan_data(tmp_path: Path) -> None:
    (test_command,) = [b for b in _bash_blocks() if "pytest" in b]
    pytest_args = shlex.split(test_command.split("&&")[-1].strip())
    assert pytest_args[:3] == ["python", "-m", "pytest"] and "DAN_DATA" not in test_command
    real_data_tests = [
        "tests/test_data_verify.py::test_verify_checks_mnist_and_every_recording",
        "tests/test_siamese_recipes.py::test_mnist_siamese_each_loss",
    ]
    proc = subprocess.run(
        [sys.executable, *pytest_args[1:], "-rs", *real_data_tests],
        cwd=REPO, env=_env_without_dan_data(), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "skipped" not in proc.stdout and " passed" in proc.stdout, proc.stdout[-3000:]


@needs_shared
@pytest.mark.parametrize("dan_data", [None, "set"])
def test_readme_main_command_reaches_the_data(dan_data: str | None) -> None:
    (main_command,) = [b for b in _bash_blocks() if "dan train" in b and "pytest" not in b]
    assignment = re.search(r"(DAN_DATA=\S+) dan train", main_command)
    assert assignment, main_command
    env = _env_without_dan_data()
    if dan_data:
        env["DAN_DATA"] = str(SHARED.resolve())
    proc = subprocess.run(
        ["bash", "-c", f"{assignment.group(1)} {sys.executable} -m dan.cli data verify"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "t10k-images-idx3-ubyte.gz: official" in proc.stdout and "speaker george: 500 readable" in proc.stdout
