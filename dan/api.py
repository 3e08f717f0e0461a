"""``dan.load(path)``: a checkpoint -> a ready model (eval mode) with the preprocessing it was trained with."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dan.data.readers import Reader, modality_specs, reader_from_spec
from dan.engine.checkpoint import load_checkpoint, load_model_state
from dan.engine.test_time import averaged_output, check_tta, views
from dan.errors import CheckpointError, DataFormatError, describe
from dan.models import DANOutput, build_model


class Preprocessing:
    """Turns raw inputs into normalised model inputs, as the training data was built: one registered
    reader per modality, with the statistics fitted on the training split.

    ``spec`` is a split's ``preprocessing`` dict: ``{"modalities": {m: reader spec}, "classes": [...]}``
    (checkpoints of dan 0.1 held ``image`` and ``audio`` specs at the top level; they are read too).
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)
        self.readers: dict[str, Reader] = {m: reader_from_spec(s, m) for m, s in modality_specs(spec).items()}
        self.classes: list[str] = [str(c) for c in self.spec.get("classes") or []]

    def reader(self, modality: str) -> Reader:
        """The reader of ``modality``; a DataFormatError lists the modalities otherwise."""
        if modality not in self.readers:
            raise DataFormatError(
                f"no preprocessing for modality {modality!r}; this checkpoint's modalities: "
                f"{', '.join(sorted(self.readers)) or '(none)'}"
            )
        return self.readers[modality]

    def __call__(self, modality: str, value: Any) -> Tensor:
        """One input of ``modality`` (a file path, a tensor, or for audio a ``(waveform, rate)`` pair) ->
        a normalised batch of one ``[1, *shape]``."""
        reader = self.reader(modality)
        return reader.normalise(reader.prepare(value).unsqueeze(0))

    def image(self, x: Tensor) -> Tensor:
        """Image ``[1, H, W]`` or ``[H, W]`` in [0, 1] (bright strokes on dark) -> normalised ``[1, 1, S, S]``."""
        return self("image", x)

    def image_file(self, path: str | os.PathLike[str]) -> Tensor:
        """Any image file (size, colour mode) -> normalised ``[1, C, S, S]``."""
        return self("image", Path(path))

    def audio(self, wave: Tensor, sample_rate: int) -> Tensor:
        """Waveform ``[L]`` or ``[channels, L]`` at any rate -> standardised features ``[1, 1, F, T]``."""
        return self("audio", (wave, sample_rate))

    def audio_file(self, path: str | os.PathLike[str]) -> Tensor:
        """Any WAV file (rate, channels) -> standardised features ``[1, 1, F, T]``."""
        return self("audio", Path(path))


class LoadedModel(nn.Module):
    """A trained model in eval mode with its preprocessing and config.

    Attributes: ``model`` (DANModel), ``preprocessing`` (:class:`Preprocessing`), ``config`` (resolved dict),
    ``modalities``, ``checkpoint`` (its path), ``manifest_hash``.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        config: dict[str, Any],
        path: Path,
        manifest_hash: str,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.config = config
        self.checkpoint = path
        self.manifest_hash = manifest_hash
        self.modalities = list(model.modalities)
        self.views = views(check_tta(dict(config.get("eval") or {}).get("tta")))  # eval.tta, parsed once
        self.eval()

    def forward(self, batch: Mapping[str, Tensor]) -> DANOutput:
        """``{m: normalised input [B, ...]}`` -> :class:`DANOutput`, averaged over the config's ``eval.tta``
        views when it has any (:mod:`dan.engine.test_time`)."""
        return averaged_output(self.model, self.views, batch)

    @torch.no_grad()
    def predict(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        image: str | os.PathLike[str] | Tensor | None = None,
        audio: str | os.PathLike[str] | tuple[Tensor, int] | None = None,
    ) -> dict[str, Any]:
        """Predict from ``inputs {modality: file path, tensor, or (for audio) (waveform, rate)}``; ``image``
        and ``audio`` are shorthands. Any subset of the model's modalities may be given.

        Returns ``{"class": index, "label": class name, "probability", "probs" [C], "modalities": {m:
        {"class", "label", "probability"}}, "used": [...]}``.
        """
        shorthands = {m: v for m, v in (("image", image), ("audio", audio)) if v is not None}
        given = {m: v for m, v in {**(inputs or {}), **shorthands}.items() if v is not None}
        unknown = sorted(set(given) - set(self.modalities))
        if unknown:
            raise DataFormatError(
                f"this model takes {', '.join(self.modalities)}; it has no {', '.join(unknown)} input"
            )
        if not given:
            raise DataFormatError(f"give at least one input the model takes: {', '.join(self.modalities)}")
        device = next(self.model.parameters()).device
        batch = {m: self.preprocessing(m, v).to(device) for m, v in given.items()}
        out = self(batch)
        probs = out.logits.float().softmax(-1)[0]
        per = {m: lg.float().softmax(-1)[0] for m, lg in out.modality_logits.items()}
        return {
            "class": int(probs.argmax()),
            "label": self.class_name(int(probs.argmax())),
            "probability": float(probs.max()),
            "probs": [round(float(p), 6) for p in probs],
            "modalities": {
                m: {"class": int(p.argmax()), "label": self.class_name(int(p.argmax())), "probability": float(p.max())}
                for m, p in per.items()
            },
            "used": sorted(batch),
        }

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its number where the checkpoint stores no class names)."""
        classes = self.preprocessing.classes
        return classes[index] if 0 <= index < len(classes) else str(index)


def load(path: str | os.PathLike[str], map_location: Any = "cpu") -> LoadedModel:
    """A checkpoint file -> :class:`LoadedModel` in eval mode, its model built from the checkpoint's config.

    Raises CheckpointError for unsafe, truncated or mismatched files.
    """
    path = Path(path)
    state = load_checkpoint(path, map_location=map_location)
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in config or "model" not in state:
        raise CheckpointError(
            f"{path}: the checkpoint holds no model or no model config; it was not written by a dan recipe"
        )
    meta = state.get("metric_model")
    if isinstance(meta, dict):
        raise CheckpointError(
            f"{path} is a {meta.get('kind')} checkpoint of the {config.get('recipe')} recipe, not a classifier; "
            f"compare two inputs with it: dan verify {path} A B"
        )
    try:
        with torch.device("meta"):  # the stored config's shapes are checked against the stored weights first:
            skeleton = build_model(config["model"])  # a config claiming a huge model costs no memory here
    except Exception as exc:  # the stored config is data from a file: any failure to build from it is the file's
        raise CheckpointError(f"{path}: its stored model config does not build a model ({describe(exc)}); "
                              "it was not written by dan or was altered: use another copy") from None
    load_model_state(skeleton, state["model"], source=str(path), shapes_only=True)
    try:
        preprocessing = Preprocessing(state.get("preprocessing") or {})
    except Exception as exc:
        raise CheckpointError(f"{path}: its stored preprocessing is invalid ({describe(exc)}); it was not written "
                              "by dan or was altered: use another copy") from None
    model = build_model(config["model"])
    load_model_state(model, state["model"], source=str(path))
    model.to(map_location)
    return LoadedModel(model, preprocessing, config, path, state.get("manifest_hash", ""))
