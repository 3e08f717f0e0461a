import pytest
import torch
import torch.nn.functional as F

from dan.errors import ConfigError
from dan.losses.metric import build_metric_loss


def _clustered(sep: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 4
    emb = torch.eye(8)[labels] * sep + 0.3 * torch.randn(32, 8, generator=g)
    return F.normalize(emb, dim=1), labels


@pytest.mark.parametrize("name", ["contrastive", "triplet", "ntxent", "supcon"])
def test_loss_is_lower_for_separated_clusters(name: str) -> None:
    loss = build_metric_loss(name)
    good, labels = _clustered(5.0)
    bad, _ = _clustered(0.0)
    assert float(loss(good, labels)) < float(loss(bad, labels))


@pytest.mark.parametrize("name", ["contrastive", "triplet", "ntxent", "supcon"])
def test_loss_trains_embeddings(name: str) -> None:
    emb, labels = _clustered(0.2)
    emb = emb.clone().requires_grad_(True)
    loss = build_metric_loss(name)
    opt = torch.optim.SGD([emb, *loss.parameters()], lr=0.5)
    first = float(loss(F.normalize(emb, dim=1), labels))
    for _ in range(30):
        opt.zero_grad()
        value = loss(F.normalize(emb, dim=1), labels)
        value.backward()
        opt.step()
    assert float(loss(F.normalize(emb, dim=1), labels)) < first


@pytest.mark.parametrize("name", ["ntxent", "supcon"])
def test_cross_modal_reference_set(name: str) -> None:
    img, labels = _clustered(5.0)
    aud, _ = _clustered(5.0)
    loss = build_metric_loss(name)
    shuffled = labels[torch.randperm(32, generator=torch.Generator().manual_seed(1))]
    assert float(loss(img, labels, aud, labels)) < float(loss(img, labels, aud, shuffled))


@pytest.mark.parametrize("name", ["ntxent", "supcon"])
def test_learnable_temperature_is_a_parameter(name: str) -> None:
    loss = build_metric_loss(name, temperature=0.1)
    params = list(loss.parameters())
    assert len(params) == 1 and abs(float(params[0].exp()) - 10.0) < 1e-4
    img, labels = _clustered(1.0)
    loss(img, labels).backward()
    assert params[0].grad is not None and params[0].grad.abs() > 0


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("contrastive", {"margin": -1.0}, "margin"),
        ("triplet", {"mining": "medium"}, "mining"),
        ("ntxent", {"temperature": 0}, "temperature"),
    ],
)
def test_config_errors(name: str, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_metric_loss(name, **kwargs)
    with pytest.raises(ConfigError, match="valid choices: contrastive, ntxent, supcon, triplet"):
        build_metric_loss("arcface")


def test_supcon_is_ntxent_with_every_same_class_item_positive() -> None:
    """With one positive per anchor (instance labels) SupCon and NT-Xent are the same InfoNCE loss."""
    img, _ = _clustered(1.0)
    aud, _ = _clustered(0.5)
    ids = torch.arange(32)
    a = build_metric_loss("ntxent", temperature=0.2, learnable_temperature=False)(img, ids, aud, ids)
    b = build_metric_loss("supcon", temperature=0.2, learnable_temperature=False)(img, ids, aud, ids)
    assert float(a) == pytest.approx(float(b), rel=1e-5)
