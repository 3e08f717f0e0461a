"""bench/report.py turns result JSON into docs/benchmarks.md: targets met or missed by how much, and a
section per benchmark (the benchmarks themselves run by hand, never in CI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import report  # noqa: E402

MACHINE = {
    "cpu": "Test CPU",
    "cores": 2,
    "torch": "2.x",
    "python": "3.11",
    "date": "2026-01-01 00:00",
    "load_avg_1m": 0.1,
}


def write(folder: Path, name: str, body: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps({"benchmark": name, "machine": MACHINE, **body}))


def test_verdict_states_misses_by_how_much() -> None:
    assert report.verdict(12.0, 30.0, lower_is_better=True) == "met"
    assert (
        report.verdict(45.0, 30.0, lower_is_better=True, unit=" s")
        == "**missed** by 15 s (50% of the target)"
    )
    assert (
        report.verdict(1.5, 3.0, lower_is_better=False, unit="x") == "**missed** by 1.5x (50% of the target)"
    )
    assert report.verdict(None, 3.0, lower_is_better=False) == "not measured"


@pytest.mark.parametrize("reached", [True, False])
def test_render_lists_targets_and_sections(tmp_path: Path, reached: bool) -> None:
    runs = [
        {
            "seed": i,
            "import_s": 2.0,
            "ready_s": 3.0,
            "reached": reached,
            "time_to_accuracy_s": t if reached else None,
            "final_test_acc": 0.995 if reached else 0.98,
            "epochs": [{"epoch": 1, "s": t, "test_acc": 0.995 if reached else 0.98}],
        }
        for i, t in enumerate([20.0, 25.0, 40.0])
    ]
    write(
        tmp_path,
        "time_to_accuracy",
        {
            "config": "avmnist_fast",
            "overrides": [],
            "threads": 2,
            "target_acc": 0.993,
            "target_s": 30.0,
            "runs": runs,
            "all_reached": reached,
            "median_s": 25.0 if reached else None,
            "command": "python bench/time_to_accuracy.py",
        },
    )
    write(
        tmp_path,
        "data_cache_clean",
        {
            "build_s": [9.0, 10.0, 11.0],
            "reload_s": [1.2, 1.5, 1.4],
            "build_median_s": 10.0,
            "reload_median_s": 1.4,
            "command": "python bench/data_cache.py",
        },
    )
    page = report.render(tmp_path)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in page.splitlines() if line.startswith("| ")}
    tta = rows["time to 99.3% fused test acc (avmnist_fast)"]
    assert ("25 s median" in tta and tta.endswith("| met |")) if reached else "median run did not reach" in tta
    assert rows["AV-MNIST cache build"].endswith("| met |")
    assert "**missed** by 0.4 s (40% of the target)" in rows["AV-MNIST cache reload"]
    assert "- command: `python bench/data_cache.py`" in page
    assert "_not run yet: no throughput.json_" in page


def test_scaling_target_splits_the_cost_of_two_processes(tmp_path: Path) -> None:
    medians = {"1 process": 5000.0, "2 processes": 4500.0, "one rank alone": 3200.0}
    medians["2 ranks side by side, no DDP"] = 6100.0
    write(
        tmp_path,
        "scaling",
        {
            "config": "avmnist_fast",
            "processes": [{"layout": k, "pairs_per_s": v} for k, v in medians.items()],
            "pairs_per_s_median": medians,
            "dataset_sizes": [{"pairs_per_image": 1, "step_ms": 20.0}],
            "command": "python bench/scaling.py",
        },
    )
    page = report.render(tmp_path)
    row = next(line for line in page.splitlines() if line.startswith("| 2 torchrun processes beat 1"))
    assert "4500 vs 5000 pairs/s (0.90x)" in row
    assert "**missed**: 2 processes give 10% less" in row
    assert "one rank's work alone, doubled: 6400 pairs/s" in row
    assert "2 ranks side by side without DDP: 6100 pairs/s" in row


def test_median_time_to_target_counts_a_run_that_never_reached_as_the_slowest() -> None:
    import common

    assert common.median_time_to_target([30.0, None, 20.0]) == 30.0
    assert common.median_time_to_target([30.0, None, None]) is None
    assert common.median_time_to_target([10.0, 20.0, 30.0, None]) == 25.0
    assert common.median_time_to_target([10.0, 20.0, None, None]) is None


def test_ratio_to_the_plain_cnn_is_bounded_when_its_median_run_never_reached() -> None:
    import time_to_accuracy

    def base(t: float | None, wall: float) -> dict:
        return {"reached": t is not None, "time_to_accuracy_s": t, "wall_s": wall}

    both = time_to_accuracy.compare(30.0, [base(60.0, 65.0), base(None, 90.0), base(80.0, 85.0)])
    assert both == {"median_s": 80.0, "ratio": 30.0 / 80.0, "ratio_at_most": None}
    bound = time_to_accuracy.compare(30.0, [base(60.0, 65.0), base(None, 90.0), base(None, 100.0)])
    assert bound == {"median_s": None, "ratio": None, "ratio_at_most": 30.0 / 90.0}
    assert time_to_accuracy.compare(None, [base(None, 90.0)] * 3)["ratio_at_most"] is None


@pytest.mark.parametrize("case", ["ratio", "bounded", "missed"])
def test_image_head_target_against_the_plain_cnn(tmp_path: Path, case: str) -> None:
    reached = case != "missed"
    accs = [0.99, 0.996] if reached else [0.99, 0.993]
    runs = [
        {"seed": i, "import_s": 2.0, "ready_s": 3.0, "reached": reached, "time_to_accuracy_s": 30.0 if reached else None,
         "final_test_acc": accs[-1], "epochs": [{"epoch": j + 1, "s": 15.0 * (j + 1), "test_acc": a}
                                                for j, a in enumerate(accs)]}
        for i in range(2)
    ]
    base_reached = case != "bounded"
    base = [{"seed": i, "test_acc_per_epoch": [0.99, 0.995 if base_reached else 0.994], "reached": base_reached,
             "time_to_accuracy_s": 50.0 if base_reached else None, "wall_s": 52.0 if base_reached else 70.0}
            for i in range(2)]
    compared = {"ratio": {"median_s": 50.0, "ratio": 0.6, "ratio_at_most": None},
                "bounded": {"median_s": None, "ratio": None, "ratio_at_most": 30.0 / 70.0},
                "missed": {"median_s": 50.0, "ratio": None, "ratio_at_most": None}}[case]
    write(
        tmp_path,
        "time_to_accuracy_acc_image",
        {"config": "avmnist_fast", "overrides": [], "threads": 2, "metric": "acc_image", "target_acc": 0.995,
         "target_s": 30.0, "runs": runs, "all_reached": reached, "median_s": 30.0 if reached else None,
         "baseline": {"model": "bench/plain_cnn.py", "runs": base, **compared},
         "command": "python bench/time_to_accuracy.py --metric acc_image --baseline"},
    )
    page = report.render(tmp_path)
    row = next(line for line in page.splitlines() if line.startswith("| avmnist_fast image head to 99.5%"))
    if case == "ratio":
        assert "30 s vs 50 s median (0.60x)" in row and "**missed** by 0.1x" in row
    elif case == "bounded":
        assert "30 s vs — s median (at most 0.43x: the plain CNN's median run never reached it)" in row
        assert row.endswith("| met |")
        assert "ratio — (at most 0.4286)" in page
    else:
        assert "did not reach 99.5% in most runs (best 99.30%, 99.30%)" in row
    assert "baseline `bench/plain_cnn.py` in the same run" in page


def test_balancer_benchmark_cells_table_and_docs(tmp_path: Path) -> None:
    import balancers

    concat = {name: (reason, overrides) for name, reason, overrides in balancers.cells(["static", "mla", "mmcosine"], "concat")}
    attention = {name: (reason, overrides) for name, reason, overrides in balancers.cells(["static", "mla", "mmcosine"], "attention")}
    assert concat["static"] == (None, ["balancer=static", "model.fusion.name=concat"])
    assert concat["mla"] == (None, ["balancer=mla"])  # its method config sets sum fusion
    assert attention["mmcosine"][0] == "needs concat fusion with a linear head"
    rows = [
        {"fusion": "concat", "balancer": "static", "test/acc": a, "test/acc_without_audio": 0.6,
         "test/acc_without_image": 0.8, "test/shapley_image": 0.1, "test/shapley_audio": 0.3,
         "train_seconds": 40.0, "epochs": 4}
        for a in (0.94, 0.96)
    ] + [{"fusion": "attention", "balancer": "mmcosine", "skipped": "needs concat fusion with a linear head"}]
    text = balancers.table(rows)
    assert "| concat | `static` | 95.00 ± 1.41 | 60.00 | 80.00 | 10.00 | 30.00 | 10.0 | 2 |" in text
    assert "| attention | mmcosine | n/a: needs concat fusion with a linear head |" in text
    h200 = {"device": "cuda:0", "device_name": "NVIDIA H200", "threads": 1, "processes": 1, "amp": True}
    assert balancers.machines([{**rows[0], "machine": h200}, rows[1], rows[2]]) == (
        "NVIDIA H200 (cuda:0, 1 thread(s), AMP) (1 runs) and a machine their results.json does not name (1 runs)"
    )
    docs = tmp_path / "results.md"
    docs.write_text("before\n<!-- balancer-benchmark:start -->\nold\n<!-- balancer-benchmark:end -->\nafter\n")
    balancers.write_docs(docs, "new")
    assert docs.read_text() == "before\n<!-- balancer-benchmark:start -->\nnew\n<!-- balancer-benchmark:end -->\nafter\n"
