"""``dan grid``'s table names the metric that chose each cell's ``best.pt`` and prints it in its own unit."""

from __future__ import annotations

from dan.engine.grid_command import table


def _row(seed: str, metric: str, best: float) -> dict:
    return {"cell": {"seed": seed}, "test/acc": 0.995, "best_metric": metric, "best_val": best}


def test_one_metric_is_named_in_the_header() -> None:
    lines = table([_row("0", "val/loss", 0.0021852), _row("1", "val/loss", 0.0024)]).splitlines()
    assert lines[0] == "| seed | test/acc | best.pt val/loss | train s |"
    assert lines[2] == "| 0 | 99.50 | 0.0022 | 0 |"


def test_accuracies_in_percent_and_mixed_metrics_named_per_cell() -> None:
    lines = table([_row("0", "val/acc", 0.996), _row("1", "val/eer", 0.031)]).splitlines()
    assert lines[0] == "| seed | test/acc | best.pt metric | train s |"
    assert lines[2:] == ["| 0 | 99.50 | val/acc 99.60 | 0 |", "| 1 | 99.50 | val/eer 0.0310 | 0 |"]


def test_a_shared_accuracy_stays_in_percent() -> None:
    lines = table([_row("0", "val/acc", 0.996), _row("1", "val/acc", 0.9915)]).splitlines()
    assert lines[0] == "| seed | test/acc | best.pt val/acc | train s |"
    assert lines[2:] == ["| 0 | 99.50 | 99.60 | 0 |", "| 1 | 99.50 | 99.15 | 0 |"]
