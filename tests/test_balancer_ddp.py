"""Every rank of a 2-process gloo run (real ``torchrun``) ends with the same parameters and the same
balancer state, for every balancer: OGM-GE's scores are all-reduced and its GE noise drawn from a generator
shared by the ranks; uncertainty's log-variance gradients are averaged; GradNorm's losses and trunk
gradients are averaged before its weight update; gradient blending trains its copies data-parallel;
MMPareto averages each encoder's fused and unimodal gradients before choosing its weights; re-learning
gathers every rank's embeddings and takes rank 0's re-initialisation strengths; PMR all-reduces its
prototype sums and its scores; AGM all-reduces its mono scores; UMT trains its teachers data-parallel;
InfoReg all-reduces its scores and reads its Fisher traces from the averaged gradients;
ReconBoost boosts data-parallel;
MLA all-reduces the mean feature its projection learns from;
Greedy measures its speeds from the averaged gradients (and DDP broadcasts the MMTM running means)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BALANCERS = ["static", "uncertainty", "gradnorm", "gradient_blend", "ogm_ge", "mmpareto", "relearning", "pmr", "agm", "mmcosine", "umt", "ume", "inforeg", "reconboost", "mla", "greedy"]


@pytest.mark.slow
def test_balancer_state_and_parameters_are_equal_on_every_rank(tmp_path: Path) -> None:
    out = tmp_path / "ranks.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(HERE / "ddp_balancer_worker.py"), str(out), *BALANCERS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    spreads = json.loads(out.read_text())
    assert sorted(spreads) == sorted(BALANCERS)
    for name, s in spreads.items():
        s.pop("moved")
        assert s == {"params": 0.0, "balancer_state": 0.0, "balancer_weights": 0.0}, name
    assert json.loads(out.read_text())["gradient_blend"]["moved"] > 0.01  # its estimate ran
