import pytest
import torch

from dan.errors import ConfigError
from dan.metrics.retrieval import retrieval_metrics
from dan.metrics.verification import apply_threshold, choose_threshold, roc


def _scores() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    same = (torch.arange(2000) % 2).float()
    scores = same * 1.5 + torch.randn(2000, generator=g)
    return scores, same


def test_roc_auc_eer_match_gaussian_theory() -> None:
    scores, same = _scores()
    r = roc(scores, same)
    # two unit Gaussians 1.5 apart: AUC = Phi(1.5/sqrt 2) = 0.856, EER = Phi(-0.75) = 0.227
    assert abs(r.auc - 0.856) < 0.03 and abs(r.eer - 0.227) < 0.03
    assert abs(r.eer_threshold - 0.75) < 0.15


def test_threshold_from_val_applied_to_test() -> None:
    scores, same = _scores()
    t = choose_threshold(scores, same, "eer")
    m = apply_threshold(scores, same, t)
    assert abs(m["far"] - m["frr"]) < 0.03 and abs(m["accuracy"] - (1 - m["far"] / 2 - m["frr"] / 2)) < 1e-6
    t_far = choose_threshold(scores, same, "far", target_far=0.01)
    assert apply_threshold(scores, same, t_far)["far"] <= 0.011 and t_far > t


def test_perfect_separation() -> None:
    same = torch.tensor([1.0, 1, 0, 0])
    m = apply_threshold(
        torch.tensor([0.9, 0.8, 0.1, 0.2]), same, choose_threshold(torch.tensor([0.9, 0.8, 0.1, 0.2]), same)
    )
    assert m["accuracy"] == 1.0


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="both same and different"):
        roc(torch.rand(4), torch.ones(4))
    with pytest.raises(ConfigError, match="verify.threshold"):
        choose_threshold(*_scores(), method="median")


def test_retrieval_metrics() -> None:
    labels = torch.arange(40) % 4
    centers = torch.eye(8)[:4] * 5
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(centers[labels] + 0.1 * torch.randn(40, 8, generator=g), dim=1)
    r = torch.nn.functional.normalize(centers[labels] + 0.1 * torch.randn(40, 8, generator=g), dim=1)
    good = retrieval_metrics(q, labels, r, labels)
    assert good["precision_at_1"] == 1.0 and good["mean_average_precision_at_r"] == pytest.approx(1.0)
    bad = retrieval_metrics(q, labels, r, labels[torch.randperm(40, generator=g)])
    assert bad["precision_at_1"] < 0.6


def test_val_threshold_applied_unchanged_to_test(tmp_path) -> None:
    from dan.metrics.verification import plot_roc, verify_distances

    g = torch.Generator().manual_seed(1)
    same = (torch.arange(400) % 2).float()
    val_d = 1.0 - same * 0.6 + 0.1 * torch.randn(400, generator=g)
    test_d = 1.0 - same * 0.6 + 0.1 * torch.randn(400, generator=g)
    r = verify_distances(val_d, same, test_d, same)
    assert r.threshold == verify_distances(val_d, same, test_d + 5, same).threshold  # test never moves it
    assert 0.4 < r.threshold < 1.0 and r.test["accuracy"] > 0.95 and r.test["auc"] > 0.99
    accept = test_d <= r.threshold
    assert r.test["far"] == pytest.approx(float(accept[same == 0].float().mean()))
    assert r.test["frr"] == pytest.approx(float((~accept[same == 1]).float().mean()))
    assert plot_roc(r, tmp_path / "roc.png").stat().st_size > 1000
    assert set(r.to_dict()) == {"threshold", "method", "target_far", "val", "test"}


def test_threshold_is_midway_in_the_validation_gap() -> None:
    same = torch.tensor([1.0, 1, 0, 0])
    # distances 0.1, 0.2 (same) and 0.8, 0.9 (different): any threshold in [0.2, 0.8) is perfect on val
    t = -choose_threshold(-torch.tensor([0.1, 0.2, 0.8, 0.9]), same)
    assert t == pytest.approx(0.5)
