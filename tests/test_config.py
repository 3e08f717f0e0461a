"""Config loading: schema merge, overrides, one-line ConfigErrors naming the key and the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from dan.config import config_names, find_config, load_config, merge, recipe_names, to_dict
from dan.errors import ConfigError


def test_shipped_config_by_name_and_overrides() -> None:
    cfg = load_config("quickstart", ["train.epochs=7", "optimizer.lr=0.01", "model.fusion.name=gated"])
    assert cfg.recipe == "fusion"
    assert cfg.train.epochs == 7 and cfg.optimizer.lr == 0.01
    assert cfg.model.fusion.name == "gated"
    assert cfg.run_name == "quickstart"
    assert cfg.train.grad_clip == 1.0  # schema default filled in
    assert find_config("quickstart.yaml") == find_config("quickstart")


def test_config_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(find_config("quickstart").read_text())
    assert load_config(path).run_name == "mine"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epoch=3", "unknown config key 'train.epoch'; valid keys under 'train': absent_modalities, adversary, amp, batch_size"),
        ("foo=1", "unknown config key 'foo'; valid keys at the top level"),
        ("train.epochs=abc", "'train.epochs'"),
        ("optimizer.lr=0", "optimizer.lr must be a finite number > 0, got 0"),
        ("optimizer.lr=-1", "optimizer.lr must be a finite number > 0"),
        ("train.batch_size=0", "train.batch_size must be a finite number > 0"),
        ("optimizer.name=adam", "optimizer.name='adam' is not valid; valid choices: adamw, sgd"),
        ("scheduler.name=step", "valid choices: onecycle, cosine, none"),
        ("logger=tensorboard", "valid choices: none, console, wandb"),
        ("model.fusion.name=bogus", "valid choices: attention, concat, film, gated, sum"),
        (
            "model.towers.image.name=vit9",
            "model.towers.image: unknown towers 'vit9'; valid choices: audio_cnn, audio_tcn, image_cnn",
        ),
        ("model.trunk.name=xx", "model.trunk: unknown trunks 'xx'; valid choices: mlp, transformer"),
        ("model.dimm=3", "unknown model keys ['dimm']; valid keys: num_classes, dim, towers"),
        ("train.amp=maybe", "config key 'train.amp': Value 'maybe' is not a valid bool"),
        ("optimizer.lr=fast", "config key 'optimizer.lr': Value 'fast' of type 'str' could not be converted"),
        ("train.batch_size=1.5", "config key 'train.batch_size'"),
        ("model.num_classes=abc", "model.num_classes must be an int (the number of classes C), got 'abc'"),
        ("model.modality_dropout=1.5", "model.modality_dropout for 'audio' must be in [0, 1), got 1.5"),
        ("model.dim=0", "model.dim must be a positive int, got 0"),
        ("train.grad_clip=-1", "train.grad_clip must be a finite number >= 0, got -1.0"),
        ("train.nonfinite_inputs=warn", "train.nonfinite_inputs='warn' is not valid; valid choices: stop, skip"),
        ("wandb.init_timeout=0", "wandb.init_timeout must be a finite number > 0"),
        ("device=tpu", "device='tpu' is not valid; valid choices: auto, cpu, cuda, mps"),
        ("balancer.name=magic", "gradient_blend"),
        (
            "train.early_stopping.metric=val/f1",
            "valid choices: val/acc, val/loss, val/acc_audio, val/acc_image",
        ),
        ("data.name=cifar", "valid choices: avmnist, folder, fsdd, manifest, mnist, synthetic"),
        ("data.n_tran=5", "unknown key data.n_tran for datasets 'synthetic'; valid keys: audio, audio_noise"),
        ("recipe=nope", "recipe='nope' is not valid; valid choices: crossmodal, fusion, siamese"),
        ("train.heldout_fraction=1.5", "train.heldout_fraction must lie in (0, 1)"),
        ("epochs", "is not of the form key=value"),
        ("optimizer.lr=nan", "optimizer.lr must be a finite number > 0, got nan"),
        ("optimizer.lr=inf", "optimizer.lr must be a finite number > 0, got inf"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay must be a finite number >= 0, got -1"),
        ("optimizer.betas=[2,2]", "optimizer.betas[0] must lie in [0, 1), got 2"),
        ("optimizer.betas=[0.9]", "optimizer.betas must be two numbers"),
        ("optimizer.momentum=1.5", "optimizer.momentum must lie in [0, 1), got 1.5"),
        ("seed=99999999999999999999", "seed must lie in [0, 9.22337e+18), got 99999999999999999999"),
        ("seed=-1", "seed must lie in [0, 9.22337e+18), got -1"),
        ("train.grad_clip=nan", "train.grad_clip must be a finite number >= 0, got nan"),
        ("scheduler.min_lr=-0.1", "scheduler.min_lr must be a finite number >= 0"),
        ("model.num_classes=1", "model.num_classes must be at least 2"),
    ],
)
def test_bad_values_give_one_line_errors(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", [override])
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_validation_loads_no_data(tmp_path: Path) -> None:
    # an AV-MNIST config pointing at an empty folder validates: data is only read when training starts
    cfg = load_config("avmnist_concat_offline", [f"data.root={tmp_path / 'nothing'}"])
    assert cfg.data.root.endswith("nothing")


def test_unknown_config_lists_shipped() -> None:
    with pytest.raises(ConfigError, match="shipped configs: .*avmnist_concat_offline.*quickstart"):
        find_config("no_such_config")


def test_invalid_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(listy)


def test_to_dict_roundtrip() -> None:
    cfg = load_config("quickstart")
    again = merge(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("name", config_names())
def test_every_shipped_config_validates(name: str, tmp_path: Path) -> None:
    overrides = [f"data.root={tmp_path}"] if name == "folder_siamese" else []
    cfg = load_config(name, overrides)
    assert cfg.recipe in recipe_names()


def test_folder_template_names_the_missing_root() -> None:
    with pytest.raises(ConfigError, match="data.root is required for data.name=folder"):
        load_config("folder_siamese")


@pytest.mark.parametrize(
    "override",
    ["model.fusion.name=bogus", "optimizer.lr=-1", "train.batch_size=0", "model.towers.audio.name=nope", "xyz=1"],
)
def test_bad_config_fails_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], override: str
) -> None:
    from dan.cli import main
    from dan.data.avmnist import AVMnistConfig

    def no_data(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(AVMnistConfig, "build", no_data)
    args = ["train", "avmnist_concat_offline", f"data.root={tmp_path / 'missing'}", override]
    assert main([*args, f"output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dan train: error: ") and err.count("\n") == 1
    assert override.split("=")[0].removesuffix(".name") in err  # the message names the key at fault
    assert not (tmp_path / "runs").exists()


def test_unknown_key_in_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(find_config("quickstart").read_text().replace("  epochs: 3", "  epochz: 3"))
    with pytest.raises(ConfigError, match=r"^unknown config key 'train.epochz'; valid keys under 'train': absent_modalities, adversary, amp"):
        load_config(path)


@pytest.mark.parametrize(
    ("option", "message", "fix"),
    [
        ("loss=triplet", "loss=triplet picks the metric loss .* the fusion recipe trains cross-entropy .*set loss=null", "loss=null"),
        ("verify.threshold=far", "verify.threshold='far' sets pair verification .*set verify.threshold=eer", "verify.threshold=eer"),
        ("verify.test_pairs=10", "verify.test_pairs=10 sets pair verification .*set verify.test_pairs=4000", "verify.test_pairs=4000"),
    ],
)
def test_fusion_refuses_metric_recipe_options_and_the_fix_validates(option: str, message: str, fix: str) -> None:
    """``loss`` and ``verify.*`` belong to the Siamese and cross-modal recipes; the fusion recipe ignored them."""
    with pytest.raises(ConfigError, match=message):
        load_config("avmnist_concat_offline", [option])
    load_config("avmnist_concat_offline", [option, fix])
