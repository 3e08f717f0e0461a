"""AV-MNIST built from the real offline files: pairing, splits, variants, cache and manifest."""

import json
from pathlib import Path

import pytest
import torch

from dan.data.avmnist import AVMnistConfig, build_avmnist, fit_pca, pca_project
from dan.errors import ConfigError


@pytest.fixture(scope="module")
def offline(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("avcache")
    return build_avmnist({"root": str(shared_data), "cache_dir": str(cache)})


def test_offline_split_sizes(offline: dict) -> None:
    assert {k: len(v) for k, v in offline.items()} == {"train": 7000, "val": 1000, "test": 2000}
    assert offline["train"].info["num_recordings"] == 2000
    assert offline["val"].info["num_recordings"] == 250
    assert offline["test"].info["num_recordings"] == 250
    assert offline["train"].items["audio"].shape[1:] == (1, 40, 63)
    assert offline["train"].info["speakers"] == ["george", "jackson", "lucas", "nicolas", "yweweler"]


def test_pairs_are_class_consistent(offline: dict, shared_data: Path) -> None:
    from dan.data import fsdd, mnist

    _, labels = mnist.load_mnist(shared_data, "test")
    for name, split in offline.items():
        manifest = json.loads(Path(split.info["cache_file"]).with_suffix(".manifest.json").read_text())["splits"][name]
        img_idx = torch.tensor(manifest["image_index"])
        digits = torch.tensor([int(f.split("_")[0]) for f in manifest["audio_files"]])
        rows = split.rows
        assert torch.equal(labels[img_idx][rows["image"]], split.labels)
        assert torch.equal(digits[rows["audio"]], split.labels)
    # test images only meet test recordings (index 0-4), training images only training recordings
    test_files = json.loads(Path(offline["test"].info["cache_file"]).with_suffix(".manifest.json").read_text())
    assert all(int(f.split("_")[2][:-4]) < 5 for f in test_files["splits"]["test"]["audio_files"])
    assert all(int(f.split("_")[2][:-4]) >= 10 for f in test_files["splits"]["train"]["audio_files"])
    assert all(5 <= int(f.split("_")[2][:-4]) < 10 for f in test_files["splits"]["val"]["audio_files"])
    assert fsdd is not None


def test_groups_are_the_speakers_of_the_recordings(offline: dict) -> None:
    for name, split in offline.items():
        manifest = json.loads(Path(split.info["cache_file"]).with_suffix(".manifest.json").read_text())["splits"][name]
        speakers = [f.split("_")[1] for f in manifest["audio_files"]]
        named = [split.info["speakers"][g] for g in split.groups.tolist()]
        assert named == [speakers[r] for r in split.rows["audio"].tolist()]
        assert sorted(set(named)) == split.info["speakers"]


def test_normalisation_from_train_only(offline: dict) -> None:
    train = offline["train"]
    images, audio = train.items["image"], train.items["audio"]
    assert abs(float(images.mean())) < 1e-3 and abs(float(images.std()) - 1) < 1e-3
    assert torch.allclose(audio[train.rows["audio"].unique()].mean(dim=(0, 1, 3)), torch.zeros(40), atol=1e-3)
    assert abs(float(offline["test"].items["image"].mean())) > 1e-4  # test stats are not refitted


def test_deterministic_manifest_and_cache_reload(shared_data: Path, tmp_path: Path, offline: dict) -> None:
    a = build_avmnist({"root": str(shared_data), "cache_dir": str(tmp_path / "a")})
    assert a["train"].manifest_hash == offline["train"].manifest_hash
    assert torch.equal(a["test"].rows["audio"], offline["test"].rows["audio"])
    cache_file = Path(a["train"].info["cache_file"])
    assert cache_file.exists() and cache_file.with_suffix(".manifest.json").exists()
    stamp = cache_file.stat().st_mtime_ns
    b = build_avmnist({"root": str(shared_data), "cache_dir": str(tmp_path / "a")})
    assert cache_file.stat().st_mtime_ns == stamp  # reloaded, not rebuilt
    assert torch.equal(a["train"].items["audio"], b["train"].items["audio"])
    c = build_avmnist({"root": str(shared_data), "cache_dir": str(tmp_path / "a"), "seed": 1})
    assert c["train"].manifest_hash != a["train"].manifest_hash
    assert not torch.equal(c["train"].rows["audio"], a["train"].rows["audio"])


def test_pairs_per_image_and_speaker_disjoint(shared_data: Path, tmp_path: Path) -> None:
    splits = {
        "train": {"mnist": "test[:1000]", "fsdd": "train"},
        "test": {"mnist": "test[1000:1500]", "fsdd": "test"},
    }
    out = build_avmnist(
        {"root": str(shared_data), "cache_dir": str(tmp_path), "splits": splits, "pairs_per_image": 4,
         "heldout_speakers": ["lucas"]}
    )
    assert len(out["train"]) == 4000 and len(out["test"]) == 2000
    assert out["test"].info["speakers"] == ["lucas"]
    assert "lucas" not in out["train"].info["speakers"]


def test_hard_variant_degrades_both_modalities(shared_data: Path, tmp_path: Path, offline: dict) -> None:
    hard = build_avmnist({"root": str(shared_data), "cache_dir": str(tmp_path), "variant": "hard"})
    assert hard["train"].preprocessing["variant"] == "hard"
    k = len(hard["train"].preprocessing["pca"]["basis"])
    assert 1 <= k < 20  # 25% of MNIST variance lives in a handful of components
    assert hard["train"].manifest_hash != offline["train"].manifest_hash
    assert not torch.allclose(hard["train"].items["audio"], offline["train"].items["audio"])


def test_pca_keeps_requested_variance() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g) * torch.tensor([10.0, 5, 1, 1, 1, 1])
    pca = fit_pca(x, 0.5)
    recon, k = pca_project(x, pca), len(pca["basis"])
    assert k == 1
    pca_all = fit_pca(x, 1.0)
    full, k_all = pca_project(x, pca_all), len(pca_all["basis"])
    assert k_all == 6 and torch.allclose(full, x, atol=1e-3)
    assert (recon - x.mean(0)).pow(2).sum() < (x - x.mean(0)).pow(2).sum()


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"variant": "medium"}, "data.variant"),
        ({"pairs_per_image": 0}, "data.pairs_per_image"),
        ({"splits": {"val": {"mnist": "test", "fsdd": "test"}}}, "train"),
        ({"splits": {"train": {"mnist": "test"}}}, "fsdd"),
        ({"audio": {"n_mel": 3}}, "data.audio.n_mel"),
        ({"bogus": 1}, "data.bogus"),
    ],
)
def test_config_errors_name_the_key(cfg: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        AVMnistConfig.from_dict(cfg)


def test_a_run_at_one_thread_count_never_reads_a_cache_built_at_another(shared_data: Path, tmp_path: Path) -> None:
    # the float32 mean of the 7,000 training images differs in its last bit between 1 and 2 threads: before,
    # a run trained on whatever the first run to build the cache had computed
    splits = {"train": {"mnist": "test[:7000]", "fsdd": "train[:200]"}, "test": {"mnist": "test[8000:8100]", "fsdd": "test[:50]"}}
    cfg = {"root": str(shared_data), "splits": splits}
    fresh = {}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        fresh[threads] = build_avmnist({**cfg, "use_cache": False})
        cached = build_avmnist({**cfg, "cache_dir": str(tmp_path)})
        assert cached["train"].info["cache"] == "built"
        for name, split in cached.items():
            assert split.preprocessing == fresh[threads][name].preprocessing
            assert all(torch.equal(v, fresh[threads][name].items[m]) for m, v in split.items.items())
    assert fresh[1]["train"].preprocessing != fresh[2]["train"].preprocessing
    assert len(list((tmp_path / "avmnist").glob("*.pt"))) == 2
