import pytest
import torch
from einops import rearrange
from torch import nn

from dan.errors import ConfigError
from dan.models.siamese import CrossModalTwoTower, PairClassifier, SiameseNetwork


class PatchTower(nn.Module):
    """[B, 1, H, W] -> [B, 4, D] tokens from four quadrants."""

    def __init__(self, dim: int = 16, side: int = 28) -> None:
        super().__init__()
        self.proj = nn.Linear((side // 2) ** 2, dim)
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", h=2, w=2))


def test_siamese_shares_weights_by_construction() -> None:
    torch.manual_seed(0)
    net = SiameseNetwork(PatchTower(), (1, 28, 28), embed_dim=8)
    a, b = torch.randn(5, 1, 28, 28), torch.randn(5, 1, 28, 28)
    ea, eb = net(a, b)
    assert ea.shape == (5, 8) and torch.allclose(ea.norm(dim=1), torch.ones(5))
    assert torch.allclose(net(a, a)[0], net(a, a)[1])
    assert torch.allclose(net.similarity(a, b), net.similarity(b, a))
    # one set of tower parameters, receiving gradient from both branches
    assert sum(p.numel() for p in net.tower.parameters()) == sum(p.numel() for p in PatchTower().parameters())
    net.similarity(a, b).sum().backward()
    grad_both = net.tower.proj.weight.grad.clone()
    net.zero_grad()
    ea, _ = net(a, b)
    (ea * eb.detach()).sum().backward()
    assert not torch.allclose(grad_both, net.tower.proj.weight.grad)


def test_pair_classifier_is_symmetric_logit() -> None:
    torch.manual_seed(0)
    clf = PairClassifier(SiameseNetwork(PatchTower(), (1, 28, 28), embed_dim=8))
    a, b = torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)
    assert clf(a, b).shape == (3,) and torch.allclose(clf(a, b), clf(b, a))
    assert ((clf.similarity(a, b) > 0) & (clf.similarity(a, b) < 1)).all()


def test_cross_modal_two_tower() -> None:
    torch.manual_seed(0)
    model = CrossModalTwoTower(
        {"image": PatchTower(16), "audio": PatchTower(16, side=40)},
        {"image": (1, 28, 28), "audio": (1, 40, 40)},
        embed_dim=8,
    )
    out = model(
        {"image": torch.randn(4, 1, 28, 28), "audio": torch.randn(4, 1, 40, 40), "label": torch.zeros(4)}
    )
    assert set(out) == {"audio", "image"} and out["image"].shape == (4, 8)
    with pytest.raises(ConfigError, match="no 'text' tower"):
        model.embed("text", torch.randn(1, 3))
    with pytest.raises(ConfigError, match="two modalities"):
        CrossModalTwoTower({"image": PatchTower()}, {"image": (1, 28, 28)})
    with pytest.raises(ConfigError, match="model.head"):
        SiameseNetwork(PatchTower(), (1, 28, 28), head="rbf")


def test_flatten_pool_keeps_token_positions() -> None:
    torch.manual_seed(0)
    flat = SiameseNetwork(PatchTower(), (1, 28, 28), embed_dim=8, head="linear", pool="flatten")
    mean = SiameseNetwork(PatchTower(), (1, 28, 28), embed_dim=8, head="linear", pool="mean")
    assert flat.head.in_features == 4 * 16 and mean.head.in_features == 16
    x = torch.zeros(1, 1, 28, 28)
    x[..., :14, :14] = 1.0
    swapped = torch.flip(x, dims=(-1, -2))  # same quadrant tokens, other positions
    assert torch.allclose(mean.embed(x), mean.embed(swapped), atol=1e-6)
    assert not torch.allclose(flat.embed(x), flat.embed(swapped), atol=1e-3)
    with pytest.raises(ConfigError, match="model.pool"):
        SiameseNetwork(PatchTower(), (1, 28, 28), pool="max")


def test_distances() -> None:
    torch.manual_seed(0)
    net = SiameseNetwork(PatchTower(), (1, 28, 28), embed_dim=8)
    a, b = torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)
    d = net.distance(a, b)
    assert torch.allclose(d**2, 2 - 2 * net.similarity(a, b), atol=1e-5) and (net.distance(a, a) < 1e-5).all()
    clf = PairClassifier(net)
    assert torch.allclose(clf.distance(a, b), 1 - clf.similarity(a, b).double(), atol=1e-6)
    assert clf.distance(a, b).dtype == torch.float64


def test_builders_from_config() -> None:
    from dan.models.siamese import build_crossmodal, build_metric_model, build_siamese

    torch.manual_seed(0)
    net = build_siamese(
        {"tower": {"name": "image_cnn"}, "dim": 16, "embed_dim": 8, "pool": "flatten"}, "image", (1, 28, 28)
    )
    assert net.embed(torch.randn(2, 1, 28, 28)).shape == (2, 8)
    clf = build_metric_model(
        "pair_classifier", {"tower": {"name": "image_cnn"}, "dim": 16}, {"image": [1, 28, 28]}
    )
    assert isinstance(clf, PairClassifier)
    shapes = {"image": (1, 28, 28), "audio": (1, 40, 63)}
    cfg = {
        "dim": 16,
        "towers": {"image": {"name": "image_cnn"}, "audio": {"name": "audio_cnn"}},
        "trunk": {"name": "mlp"},
    }
    model = build_crossmodal(cfg, shapes)
    d = model.distance("image", torch.randn(2, 1, 28, 28), "audio", torch.randn(2, 1, 40, 63))
    assert d.shape == (2,) and model.trunk is not None
    with pytest.raises(ConfigError, match="unknown model keys \\['fusion'\\]"):
        build_crossmodal({**cfg, "fusion": {"name": "concat"}}, shapes)
    with pytest.raises(ConfigError, match="model.towers lacks audio"):
        build_crossmodal({"towers": {"image": {"name": "image_cnn"}}}, shapes)
    with pytest.raises(ConfigError, match="model.tower is required"):
        build_siamese({}, "image", (1, 28, 28))
