"""``dan.load(path)``: a checkpoint -> a ready model (eval mode) with the preprocessing it was trained with."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from dan.engine.checkpoint import load_checkpoint, load_model_state
from dan.errors import CheckpointError, DataFormatError
from dan.models import DANOutput, build_model


class Preprocessing:
    """Turns raw inputs into normalised model inputs, as the training data was built.

    ``spec`` is the split's ``preprocessing`` dict: ``{"image": {"mean", "std", "size"}, "audio":
    {"features": FeatureConfig dict, "standardize": {"mean", "std"}}, ...}``.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)

    def image(self, x: Tensor) -> Tensor:
        """Image ``[1, H, W]`` or ``[H, W]`` in [0, 1] (bright strokes on dark) -> normalised ``[1, 1, S, S]``."""
        prep = self.spec["image"]
        size = int(prep.get("size", 28))
        x = x.float().reshape(1, 1, *x.shape[-2:])
        if tuple(x.shape[-2:]) != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x - float(prep["mean"])) / float(prep["std"])

    def image_file(self, path: str | os.PathLike[str]) -> Tensor:
        """Any image file (size, colour mode) -> normalised ``[1, 1, S, S]``."""
        from dan.data.images import read_image

        return self.image(read_image(Path(path), size=int(self.spec["image"].get("size", 28))))

    def audio(self, wave: Tensor, sample_rate: int) -> Tensor:
        """Waveform ``[L]`` or ``[channels, L]`` at any rate -> standardised features ``[1, 1, F, T]``."""
        from dan.data.features import FeatureConfig, compute_features, pad_or_trim

        prep = self.spec["audio"]
        cfg = FeatureConfig(**prep["features"])
        wave = wave.float()
        if wave.dim() == 2:
            wave = wave.mean(dim=0)
        if wave.dim() != 1 or wave.numel() == 0:
            raise DataFormatError(
                f"audio must be a non-empty waveform [L] or [channels, L], got shape {tuple(wave.shape)}"
            )
        if sample_rate != cfg.sample_rate:
            wave = torchaudio.functional.resample(wave, sample_rate, cfg.sample_rate)
        feats = compute_features(pad_or_trim([wave], cfg.num_samples), cfg)
        std = prep.get("standardize")
        if std:
            feats = (feats - torch.tensor(std["mean"])[:, None]) / torch.tensor(std["std"])[:, None]
        return feats

    def audio_file(self, path: str | os.PathLike[str]) -> Tensor:
        """Any WAV file (rate, channels) -> standardised features ``[1, 1, F, T]``."""
        from dan.data.fsdd import read_wav

        rate = int(self.spec["audio"]["features"]["sample_rate"])
        return self.audio(read_wav(Path(path), rate), rate)


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
        self.eval()

    def forward(self, batch: Mapping[str, Tensor]) -> DANOutput:
        """``{m: normalised input [B, ...]}`` -> :class:`DANOutput`."""
        return self.model(batch)

    @torch.no_grad()
    def predict(
        self,
        image: str | os.PathLike[str] | Tensor | None = None,
        audio: str | os.PathLike[str] | tuple[Tensor, int] | None = None,
    ) -> dict[str, Any]:
        """Predict from an image (file or ``[1, H, W]`` tensor in [0, 1]) and/or audio (WAV file or
        ``(waveform, sample_rate)``). Returns ``{"digit", "probability", "probs" [C], "modalities":
        {m: {"digit", "probability"}}, "used": [...]}``."""
        batch: dict[str, Tensor] = {}
        device = next(self.model.parameters()).device
        if image is not None and "image" in self.modalities:
            x = image if isinstance(image, Tensor) else None
            batch["image"] = (
                self.preprocessing.image(x) if x is not None else self.preprocessing.image_file(image)
            )  # type: ignore[arg-type]
        if audio is not None and "audio" in self.modalities:
            batch["audio"] = (
                self.preprocessing.audio(*audio)
                if isinstance(audio, tuple)
                else self.preprocessing.audio_file(audio)
            )
        if not batch:
            raise DataFormatError(f"give at least one input the model takes: {', '.join(self.modalities)}")
        out = self.model({k: v.to(device) for k, v in batch.items()})
        probs = out.logits.float().softmax(-1)[0]
        per = {m: lg.float().softmax(-1)[0] for m, lg in out.modality_logits.items()}
        return {
            "digit": int(probs.argmax()),
            "probability": float(probs.max()),
            "probs": [round(float(p), 6) for p in probs],
            "modalities": {
                m: {"digit": int(p.argmax()), "probability": float(p.max())} for m, p in per.items()
            },
            "used": sorted(batch),
        }


def load(path: str | os.PathLike[str], map_location: Any = "cpu") -> LoadedModel:
    """A checkpoint file -> :class:`LoadedModel` in eval mode, its model built from the checkpoint's config.

    Raises CheckpointError for unsafe, truncated or mismatched files.
    """
    path = Path(path)
    state = load_checkpoint(path, map_location=map_location)
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(
            f"{path}: the checkpoint holds no model config; it was not written by a dan recipe"
        )
    model = build_model(config["model"])
    load_model_state(model, state["model"], source=str(path))
    model.to(map_location)
    return LoadedModel(
        model, Preprocessing(state.get("preprocessing") or {}), config, path, state.get("manifest_hash", "")
    )
