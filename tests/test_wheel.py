"""The wheel ships the recipes and their configs: built from the checkout, installed into a fresh venv, and
run from a folder outside the checkout (``dan recipes``, ``dan train quickstart``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_trains_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("dan-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in ("fusion", "siamese", "crossmodal"):
        assert f"dan/recipes/{recipe}.py" in names
    assert "dan/recipes/configs/quickstart.yaml" in names and "dan/recipes/configs/avmnist_concat_offline.yaml" in names
    assert "dan/recipes/configs/balancers/agm.yaml" in names  # the method configs ship too

    # a fresh venv; its dependencies (torch & co.) come from this environment's site-packages through a .pth
    # file, which does not run this environment's own .pth files, so the editable checkout stays invisible
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DAN_RECIPES", "PYTHONPATH")}
    where = subprocess.check_output([py, "-c", "import dan, dan.recipes; print(dan.__file__, dan.recipes.__file__)"], cwd=elsewhere, env=env, text=True)
    assert str(REPO) not in where and str(venv) in where  # the installed wheel, not the checkout

    dan = venv / "bin" / "dan"
    listing = subprocess.run([dan, "recipes"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "quickstart" in listing.stdout and "fusion:" in listing.stdout
    tiny = ["data.n_train=100", "data.n_val=40", "data.n_test=40", "model.dim=16", "train.epochs=1", "quiet=true"]
    run = subprocess.run([dan, "train", "quickstart", *tiny], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((elsewhere / "runs" / "quickstart" / "results.json").read_text())["summary"]
    assert summary["epochs"] == 1 and summary["data_source"] == "synthetic"
