"""Recipe configs: YAML files + ``key=value`` overrides, checked against a schema before any data loads.

A config is merged onto the structured schema :class:`RunConfig` (OmegaConf), so an unknown key or a
value of the wrong type fails at once; :func:`validate` then checks ranges and the names of every
registered part (towers, trunk, fusion, balancer, optimiser, scheduler) and lists the valid choices.
Every failure is a one-line :class:`~dan.errors.ConfigError` that names the key at fault.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dan.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("onecycle", "cosine", "none")
LOGGERS = ("none", "console", "wandb")
DEVICES = ("auto", "cpu", "cuda", "mps")
WANDB_MODES = ("auto", "online", "offline", "disabled")
STOP_MODES = ("max", "min", "last")
NONFINITE_INPUTS = ("stop", "skip")


@dataclass
class OptimizerConfig:
    """``optimizer.*``: ``adamw`` or ``sgd`` (momentum, nesterov)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SchedulerConfig:
    """``scheduler.*``: ``onecycle`` (peak ``optimizer.lr``), ``cosine`` (to ``min_lr``) or ``none``; per step."""

    name: str = "onecycle"
    pct_start: float = 0.25
    min_lr: float = 0.0


@dataclass
class EarlyStoppingConfig:
    """``train.early_stopping.*``: stop after ``patience`` epochs without improving ``metric`` (0 = off);
    ``best.pt`` holds the epoch with the best ``metric`` (``mode`` max or min), or the last epoch
    (``mode: last``: nothing is ranked, for when the validation split cannot rank what the test measures)."""

    metric: str = "val/acc"
    mode: str = "max"
    patience: int = 0
    min_delta: float = 0.0


@dataclass
class EmaConfig:
    """``train.ema.*``: validate, checkpoint and test an exponential moving average of the weights with this
    ``decay`` (0 = off; :mod:`dan.engine.weight_average`), its decay ramped up over the first steps with
    ``warmup``."""

    decay: float = 0.0
    warmup: bool = True


@dataclass
class AdversaryConfig:
    """``train.adversary.*``: a group adversary on ``modality``'s features (fusion recipe; ``weight`` 0 = off;
    :mod:`dan.losses.adversary`): a classifier with ``hidden`` units (0: linear) predicts each training
    sample's group (speaker) through a gradient reversal ramped by DANN's schedule with ``gamma``."""

    weight: float = 0.0
    modality: str | None = None
    hidden: int = 64
    gamma: float = 10.0


@dataclass
class TrainConfig:
    """``train.*``: the loop. ``batch_size`` is the global batch (split across DDP ranks).

    ``nonfinite_inputs``: a sample whose image or audio holds NaN/Inf is named, then the run ``stop``s before
    training or the sample is ``skip``ped (dropped from its split, with a warning).
    ``compile``: ``torch.compile`` the model's forward (inductor) in place; checkpoints keep plain keys.
    ``absent_modalities``: modalities of the model that the training data may lack entirely (their towers then
    see only the "missing" input); any other model modality absent from the data stops the run.
    ``mixup``: mixup's ``alpha`` (fusion recipe; 0 = off; :mod:`dan.data.mixup`).
    ``adversary``: a group (speaker) adversary on one modality's features (:class:`AdversaryConfig`).
    """

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    grad_clip: float = 1.0
    amp: bool = True
    log_every: int = 50
    checkpoint_every: int = 0
    heldout_fraction: float = 0.1
    num_threads: int = 0
    nonfinite_inputs: str = "stop"
    compile: bool = False
    absent_modalities: list[str] = field(default_factory=list)  # model modalities the data may lack entirely
    mixup: float = 0.0
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)


@dataclass
class WandbConfig:
    """``wandb.*``: ``mode=auto`` is online with an API key, offline without one. A backend that does not
    answer within ``init_timeout`` seconds leaves the run offline."""

    project: str = "dan"
    entity: str | None = None
    mode: str = "auto"
    tags: list[str] = field(default_factory=list)
    log_misclassified: int = 32
    log_checkpoint: bool = True
    init_timeout: float = 30.0


@dataclass
class EvalConfig:
    """``eval.*``: what ``dan eval`` and the end of training measure."""

    split: str = "test"
    noise_levels: list[float] | None = None  # null: the recipe's own (fusion: dan.engine.evaluate.NOISE_LEVELS)
    tta: dict[str, Any] | None = field(default_factory=dict)  # test-time views per modality (dan.engine.test_time); null: none


@dataclass
class VerifyConfig:
    """``verify.*`` (Siamese and cross-modal recipes): the decision threshold, chosen on validation pairs
    (``eer`` point, or ``far``: the strictest with false-accept rate <= ``target_far``), and pair counts."""

    threshold: str = "eer"
    target_far: float = 0.01
    val_pairs: int = 2000
    test_pairs: int = 4000


@dataclass
class RunConfig:
    """The whole config of a recipe run. ``model``, ``data`` and ``balancer`` are checked by their builders."""

    recipe: str = "fusion"
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs"
    run_name: str | None = None
    logger: str = "console"
    quiet: bool = False
    resume: str | None = None
    overwrite: bool = False  # replace an earlier run's files in output_dir/run_name instead of writing run_name-2
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=lambda: {"name": "avmnist"})
    balancer: dict[str, Any] = field(default_factory=lambda: {"name": "static"})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    loss: Any = None  # metric-learning recipes: a name (loss=triplet) or {name, **kwargs}
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    augment: dict[str, Any] = field(default_factory=dict)  # training-time augmentation per modality


def recipes_dir() -> Path:
    """The shipped recipes (package ``dan.recipes``, the checkout's ``recipes/``), or ``$DAN_RECIPES``."""
    env = os.environ.get("DAN_RECIPES")
    if env:
        return Path(env)
    import dan.recipes

    return Path(dan.recipes.__file__).parent


def config_names() -> list[str]:
    """Names of the configs shipped in ``recipes/configs``."""
    return sorted(p.stem for p in (recipes_dir() / "configs").glob("*.yaml"))


def find_config(name_or_path: str | os.PathLike[str]) -> Path:
    """A config file from a path, or a bare name found in ``recipes/configs`` (with or without ``.yaml``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = recipes_dir() / "configs" / f"{stem}.yaml"
    if str(path) in (path.name, f"{stem}.yaml") and shipped.is_file():
        return shipped
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor a shipped config; "
        f"shipped configs: {', '.join(config_names()) or '(none found)'}"
    )


def _one_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    msg = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    return f"config key {key!r}: {msg}"


def _unknown_key_error(exc: OmegaConfBaseException, schema: DictConfig) -> ConfigError:
    full_key = str(getattr(exc, "full_key", "") or "")
    parent, _, leaf = full_key.rpartition(".")
    node: Any = schema
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, DictConfig) else None
    valid = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "see docs/recipes.md"
    where = f"under {parent!r}" if parent else "at the top level"
    return ConfigError(f"unknown config key {full_key!r}; valid keys {where}: {valid}")


def merge(base: Mapping[str, Any] | DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """``base`` merged onto the schema, then ``key=value`` ``overrides`` (OmegaConf dotlist) on top."""
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=5)")
    schema = OmegaConf.structured(RunConfig)
    base = _switch_dataset(base, overrides)
    base, overrides = _apply_method(base, overrides)
    try:
        cfg = OmegaConf.merge(schema, base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        if type(exc).__name__ == "ConfigKeyError":
            raise _unknown_key_error(exc, schema) from None
        raise ConfigError(_one_line(exc)) from None
    assert isinstance(cfg, DictConfig)
    _drop_null_towers(cfg)
    return cfg


def _drop_null_towers(cfg: DictConfig) -> None:
    """``model.towers.<m>=null`` removes modality ``m``'s tower: a unimodal ablation of any config."""
    towers = OmegaConf.select(cfg, "model.towers")
    if isinstance(towers, DictConfig):
        for m in [k for k in towers if towers[k] is None]:
            del towers[m]


def _switch_dataset(base: Mapping[str, Any] | DictConfig, overrides: Sequence[str]) -> Mapping[str, Any] | DictConfig:
    """``data.name=OTHER`` switches dataset: the base config's ``data.*`` keys belong to its own dataset, so
    they are dropped (the other ``data.*`` overrides still apply)."""
    names = [item.split("=", 1)[1] for item in overrides if item.split("=", 1)[0] == "data.name"]
    data = base.get("data") if isinstance(base, Mapping | DictConfig) else None
    if not names or not isinstance(data, Mapping | DictConfig) or str(data.get("name", "avmnist")) == names[-1]:
        return base
    plain = OmegaConf.to_container(base) if isinstance(base, DictConfig) else dict(base)
    assert isinstance(plain, dict)
    return {**plain, "data": {}}


def balancer_config_names() -> list[str]:
    """Names of the per-method configs shipped in ``recipes/configs/balancers`` (``balancer=<name>``)."""
    return sorted(p.stem for p in (recipes_dir() / "configs" / "balancers").glob("*.yaml"))


def _apply_method(
    base: Mapping[str, Any] | DictConfig, overrides: Sequence[str]
) -> tuple[Mapping[str, Any] | DictConfig, list[str]]:
    """``balancer=<method>`` (no dot) applies the method's shipped config (``recipes/configs/balancers``: its
    balancer and what its paper trains with, e.g. the optimizer or the fusion it needs) onto ``base``; a
    section naming a builder (``name:``) replaces the base's, any other merges. The remaining overrides go on
    top."""
    names = [item.split("=", 1)[1] for item in overrides if item.split("=", 1)[0] == "balancer"]
    rest = [item for item in overrides if item.split("=", 1)[0] != "balancer"]
    if not names:
        return base, rest
    file = recipes_dir() / "configs" / "balancers" / f"{names[-1]}.yaml"
    if not file.is_file():
        raise ConfigError(
            f"balancer={names[-1]!r} names no shipped method config; use one of "
            f"{', '.join(balancer_config_names())}, or set balancer.name=NAME for a balancer with default keys"
        )
    method = OmegaConf.to_container(OmegaConf.load(file))
    plain = OmegaConf.to_container(base) if isinstance(base, DictConfig) else dict(base)
    assert isinstance(method, dict) and isinstance(plain, dict)
    return _overlay(plain, method), rest


def _overlay(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: a mapping with a ``name`` replaces, other mappings merge key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and "name" not in value and isinstance(out.get(key), Mapping):
            out[key] = _overlay(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | os.PathLike[str], overrides: Sequence[str] = (), *, check: bool = True
) -> DictConfig:
    """Read config ``path`` (a file or a shipped config name), apply ``overrides``, validate."""
    file = find_config(path)
    try:
        raw = OmegaConf.load(file)
    except Exception as exc:  # yaml.YAMLError and friends
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{file}: not valid YAML ({first}); fix the file") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{file}: a config must be a YAML mapping of keys, got a list")
    cfg = merge(raw, overrides)
    _refuse_environment(cfg)
    if cfg.run_name is None:
        cfg.run_name = file.stem
    if check:
        validate(cfg)
    return cfg


def _refuse_environment(cfg: DictConfig) -> None:
    """``${oc.env:...}`` would copy environment variables (API keys, paths) into the config that checkpoints
    store and W&B uploads: refused, naming the key."""

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, str) and "oc.env" in node:
            raise ConfigError(
                f"{key}={node!r} reads an environment variable; the resolved config is stored in checkpoints and "
                f"logged to W&B, so dan does not resolve ${{oc.env:...}}: write the value, or pass {key}=VALUE"
            )

    walk(OmegaConf.to_container(cfg, resolve=False), "")


def _choice(key: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid choices: {', '.join(valid)}")


def _positive(key: str, value: float, *, strict: bool = True) -> None:
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        raise ConfigError(f"{key} must be a finite number {'> 0' if strict else '>= 0'}, got {value!r}")


def _within(key: str, value: float, low: float, high: float) -> None:
    """``low <= value < high`` and finite."""
    if not (math.isfinite(value) and low <= value < high):
        raise ConfigError(f"{key} must lie in [{low:g}, {high:g}), got {value!r}")


def validate(cfg: DictConfig) -> None:
    """Range and name checks of a merged config; builds the model and balancer (cheap) but loads no data."""
    _choice("device", cfg.device.split(":")[0], DEVICES)
    _choice("logger", cfg.logger, LOGGERS)
    _choice("optimizer.name", cfg.optimizer.name, OPTIMIZERS)
    _choice("scheduler.name", cfg.scheduler.name, SCHEDULERS)
    _choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
    _choice("train.early_stopping.mode", cfg.train.early_stopping.mode, STOP_MODES)
    _choice("train.nonfinite_inputs", cfg.train.nonfinite_inputs, NONFINITE_INPUTS)
    _positive("wandb.init_timeout", cfg.wandb.init_timeout)
    _positive("optimizer.lr", cfg.optimizer.lr)
    _positive("optimizer.weight_decay", cfg.optimizer.weight_decay, strict=False)
    _within("optimizer.momentum", cfg.optimizer.momentum, 0.0, 1.0)
    if len(cfg.optimizer.betas) != 2:
        raise ConfigError(f"optimizer.betas must be two numbers, e.g. [0.9, 0.999], got {list(cfg.optimizer.betas)}")
    for i, beta in enumerate(cfg.optimizer.betas):
        _within(f"optimizer.betas[{i}]", beta, 0.0, 1.0)
    _within("seed", cfg.seed, 0, 2**63)
    _positive("scheduler.min_lr", cfg.scheduler.min_lr, strict=False)
    _positive("train.early_stopping.min_delta", cfg.train.early_stopping.min_delta, strict=False)
    for key in ("epochs", "batch_size", "eval_batch_size", "log_every"):
        _positive(f"train.{key}", getattr(cfg.train, key))
    for key in ("grad_clip", "checkpoint_every", "num_threads"):
        _positive(f"train.{key}", getattr(cfg.train, key), strict=False)
    _positive("train.early_stopping.patience", cfg.train.early_stopping.patience, strict=False)
    if cfg.train.early_stopping.mode == "last" and cfg.train.early_stopping.patience:
        raise ConfigError(
            "train.early_stopping.mode=last ranks no epoch, so nothing can stop early: set "
            "train.early_stopping.patience=0, or mode=max or min to stop on the metric"
        )
    _within("train.ema.decay", cfg.train.ema.decay, 0.0, 1.0)
    if not 0.0 < cfg.train.heldout_fraction < 1.0:
        raise ConfigError(f"train.heldout_fraction must lie in (0, 1), got {cfg.train.heldout_fraction}")
    from dan.data.mixup import check_alpha

    check_alpha(cfg.train.mixup)
    if not 0.0 < cfg.scheduler.pct_start < 1.0:
        raise ConfigError(f"scheduler.pct_start must lie in (0, 1), got {cfg.scheduler.pct_start}")
    from dan.engine.run_folder import check_run_name

    check_run_name(str(cfg.run_name))
    _check_recipe(cfg.recipe)
    from dan.data.augment import check_augment

    check_augment(to_dict(cfg.augment), check_data(cfg).input_shapes())
    from dan.engine.test_time import check_tta

    check_tta(to_dict(cfg.eval.tta))
    own_check = _recipe_check(cfg.recipe)
    if own_check is not None:
        own_check(cfg)


def recipe_names() -> list[str]:
    """Recipe scripts in ``recipes/`` (file stems): those defining ``main(cfg)``; helper scripts are not."""
    return sorted(
        p.stem
        for p in recipes_dir().glob("*.py")
        if not p.name.startswith("_") and _RECIPE_MAIN.search(p.read_text(errors="replace"))
    )


_RECIPE_MAIN = re.compile(r"^def main\(cfg\b", re.MULTILINE)


def _check_recipe(name: str) -> None:
    _choice("recipe", name, recipe_names())


def _recipe_check(name: str) -> Any:
    """The recipe's own ``validate_config(cfg)``, where its script defines one."""
    from dan.engine.recipes import load_recipe

    return getattr(load_recipe(name), "validate_config", None)


def check_model(cfg: DictConfig) -> list[str]:
    """``model.*`` of a DAN classifier (builds it: cheap, no data); returns its modalities."""
    from dan.models import build_model

    try:
        model = build_model(cfg.model)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a value of the wrong type deep inside a part's arguments
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"model: {first}; check the types of the model.* values") from None
    return list(model.modalities)


def check_balancer(cfg: DictConfig, modalities: list[str]) -> None:
    """``balancer.*`` for a model of ``modalities``."""
    from dan.losses import build_balancer

    try:
        build_balancer(cfg.balancer, modalities)
    except ConfigError as exc:
        raise ConfigError(f"balancer: {exc}") from None


def _require_balancer(cfg: DictConfig, flag: str, message: str) -> None:
    """A ConfigError with ``message`` (``{name}``: the configured balancer, ``{usable}``: those that qualify)
    unless ``balancer.name``'s class attribute ``flag`` (``soft_targets``, ``plain_backward``) is true."""
    from dan.losses import BALANCERS

    name = str(cfg.balancer.name)
    usable = [n for n in BALANCERS.names() if getattr(BALANCERS.get(n), flag, False)]
    if name not in usable:
        raise ConfigError(message.format(name=repr(name), usable=", ".join(usable)))


def check_mixup(cfg: DictConfig) -> None:
    """``train.mixup`` against ``balancer.name``: mixed targets need a balancer that sees the labels only
    through the head losses (its ``soft_targets``); a ConfigError names the alternatives otherwise."""
    if cfg.train.mixup:
        _require_balancer(
            cfg, "soft_targets",
            f"train.mixup={cfg.train.mixup} trains on mixed labels, but balancer {{name}} reads the batch's "
            "labels itself. Use a balancer that sees them only through the head losses ({usable}), "
            "e.g. balancer.name=static, or set train.mixup=0",
        )


def check_adversary(cfg: DictConfig, modalities: list[str]) -> None:
    """``train.adversary.*`` for a model of ``modalities``: the modality, the sizes, and no mixup or balancer
    that rewrites gradients beside it; each ConfigError names the key and the fix."""
    adv = cfg.train.adversary
    _positive("train.adversary.weight", float(adv.weight), strict=False)
    if not adv.weight:
        return
    if adv.modality is None:
        raise ConfigError(
            f"train.adversary.weight={adv.weight} needs train.adversary.modality, the tower whose features "
            f"should not tell the groups apart, e.g. train.adversary.modality={modalities[0]}"
        )
    _choice("train.adversary.modality", adv.modality, modalities)
    _positive("train.adversary.hidden", float(adv.hidden), strict=False)
    _positive("train.adversary.gamma", float(adv.gamma), strict=False)
    if cfg.train.mixup:
        raise ConfigError(
            f"train.adversary and train.mixup={cfg.train.mixup}: a mixed sample belongs to two groups; "
            "set train.mixup=0 or train.adversary.weight=0"
        )
    _require_balancer(
        cfg, "plain_backward",
        "train.adversary adds a loss to what balancer {name} returns, but {name} shapes the gradients "
        "itself. Use {usable}, e.g. balancer.name=static, or set train.adversary.weight=0",
    )


def refuse_fusion_options(cfg: DictConfig) -> None:
    """A ConfigError when ``train.mixup``, ``train.adversary``, ``eval.tta``, ``eval.noise_levels`` or a balancer
    other than ``static`` is on, or ``eval.split`` is not ``test``, in a recipe without class heads (Siamese,
    cross-modal: their metric losses take no class targets, their models have no group adversary and one loss
    to balance, their tests average no class log-probabilities, sweep no noise and score the test pairs at the
    val-chosen threshold)."""
    if any(to_dict(cfg.eval.tta or {}).values()):
        raise ConfigError(
            f"eval.tta averages class log-probabilities over views of the test batch; the {cfg.recipe} recipe "
            "scores embeddings and has none: set eval.tta=null"
        )
    if cfg.eval.noise_levels is not None:
        raise ConfigError(
            f"eval.noise_levels={list(cfg.eval.noise_levels)} sweeps the fused accuracy against noise; the "
            f"{cfg.recipe} recipe scores pairs of embeddings and has no such sweep: set eval.noise_levels=null"
        )
    if cfg.eval.split != "test":
        raise ConfigError(
            f"eval.split={cfg.eval.split!r}: the {cfg.recipe} recipe chooses its threshold on the val pairs and "
            "scores it on the test pairs (verify.test_pairs); set eval.split=test"
        )
    balancer = to_dict(cfg.balancer)
    if balancer != {"name": "static"}:
        fix = "balancer.name=static" if set(balancer) == {"name"} else "balancer=static"  # a dotted override wins
        raise ConfigError(
            f"balancer={balancer} weighs the fusion recipe's per-modality losses; the {cfg.recipe} recipe trains "
            f"one loss: set {fix}"
        )
    if cfg.train.mixup:
        raise ConfigError(
            f"train.mixup={cfg.train.mixup} mixes class targets, which the {cfg.recipe} recipe's "
            "metric losses do not take; set train.mixup=0"
        )
    if cfg.train.adversary.weight:
        raise ConfigError(
            f"train.adversary.weight={cfg.train.adversary.weight}: the group adversary belongs to the fusion "
            f"recipe, not to {cfg.recipe}; set train.adversary.weight=0"
        )


def refuse_metric_options(cfg: DictConfig) -> None:
    """A ConfigError when ``loss`` or a ``verify.*`` key other than its default is set in the fusion recipe,
    which trains cross-entropy on class heads and verifies no pairs (both were silently ignored)."""
    if cfg.loss is not None:
        raise ConfigError(
            f"loss={to_dict(cfg.loss)} picks the metric loss of the siamese and crossmodal recipes; the "
            f"{cfg.recipe} recipe trains cross-entropy on its class heads: set loss=null"
        )
    defaults = asdict(VerifyConfig())
    changed = {k: v for k, v in to_dict(cfg.verify).items() if defaults.get(k) != v}
    if changed:
        key = next(iter(changed))
        raise ConfigError(
            f"verify.{key}={changed[key]!r} sets pair verification of the siamese and crossmodal recipes; the "
            f"{cfg.recipe} recipe verifies no pairs: set verify.{key}={defaults[key]}"
        )


def check_data(cfg: DictConfig) -> Any:
    """``data.*`` bound to the registered dataset's signature (no data read); returns the dataset."""
    from dan.data import build_dataset

    return build_dataset(to_dict(cfg.data))


def check_stop_metric(cfg: DictConfig, metrics: Mapping[str, str | None]) -> None:
    """``train.early_stopping.metric`` among ``metrics {name: direction or None (either)}``, and its mode."""
    es = cfg.train.early_stopping
    _choice("train.early_stopping.metric", es.metric, list(metrics))
    want = metrics[es.metric]
    if want is not None and es.mode not in (want, "last"):
        raise ConfigError(f"train.early_stopping.mode must be {want!r} for {es.metric}")


VERIFY_METRICS = {"val/auc": "max", "val/eer": "min", "val/acc": "max"}


def check_verify(cfg: DictConfig) -> None:
    """``verify.*`` and early stopping of the verification recipes (Siamese, cross-modal)."""
    from dan.metrics.verification import THRESHOLD_METHODS

    check_stop_metric(cfg, VERIFY_METRICS)
    _choice("verify.threshold", cfg.verify.threshold, THRESHOLD_METHODS)
    if not 0.0 <= cfg.verify.target_far <= 1.0:
        raise ConfigError(f"verify.target_far must lie in [0, 1], got {cfg.verify.target_far}")


def to_dict(cfg: Any) -> Any:
    """A plain, resolved ``dict`` (or value) of an OmegaConf node, for checkpoints, JSON and wandb."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def from_dict(resolved: Mapping[str, Any]) -> DictConfig:
    """A config saved by :func:`to_dict` (e.g. in a checkpoint) merged back onto the schema."""
    return merge(dict(resolved))
