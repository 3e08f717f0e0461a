"""The plain reference the throughput benchmark compares against: the same model and data, written the
way common PyTorch tutorials write it. A per-item ``Dataset`` turns each pair into a PIL image and a
waveform, applies torchvision transforms and a torchaudio ``MelSpectrogram`` in ``__getitem__`` on
every step, a standard ``DataLoader`` collates, and the loop is forward / loss / backward / step.

The decoded waveforms are held in memory (no WAV read per item), so the reference is, if anything,
faster than the tutorials it stands for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from dan.data import fsdd, mnist
from dan.data.avmnist import mnist_spec_base
from dan.data.dataset import Split
from dan.data.readers import modality_specs
from dan.models import build_model
from dan.paths import data_root


class NaiveAVMnist(Dataset):
    """One pair per item: ``(image [1, 28, 28], log-mel [1, n_mels, T], label)``, transformed on the fly."""

    def __init__(
        self, images: Tensor, waves: list[Tensor], pairs: Tensor, labels: Tensor, prep: dict[str, Any]
    ) -> None:
        self.images, self.waves, self.pairs, self.labels = images, waves, pairs, labels
        specs = modality_specs(prep)
        img, audio = specs["image"], specs["audio"]
        feats = audio["features"]
        self.num_samples = round(feats["sample_rate"] * feats["duration_s"])
        self.image_transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(tuple(img["mean"]), tuple(img["std"]))]
        )
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=feats["sample_rate"],
            n_fft=feats["n_fft"],
            hop_length=feats["hop_length"],
            n_mels=feats["n_mels"],
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=feats["top_db"])
        self.utterance_norm = bool(feats.get("utterance_norm", False))
        self.mean = torch.tensor(audio["mean"])[:, None]
        self.std = torch.tensor(audio["std"])[:, None]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        img_row, audio_row = self.pairs[i].tolist()
        image = Image.fromarray(self.images[img_row].numpy(), mode="L")
        wave = self.waves[audio_row][: self.num_samples]
        wave = F.pad(wave, (0, self.num_samples - wave.shape[0]))
        spec = self.to_db(self.mel(wave.unsqueeze(0)))
        if self.utterance_norm:
            spec = spec - spec.mean(dim=-1, keepdim=True)
        return self.image_transform(image), (spec - self.mean) / self.std, int(self.labels[i])


def naive_dataset(split: Split) -> NaiveAVMnist:
    """The raw MNIST digits and FSDD waveforms behind ``split`` (from its cache manifest), as a
    :class:`NaiveAVMnist` over the same pairs."""
    manifest = json.loads(Path(split.info["cache_file"]).with_suffix(".manifest.json").read_text())
    entry = manifest["splits"][split.name]
    root = data_root(manifest["config"].get("root"))
    images, _ = mnist.load_mnist(root, mnist_spec_base(entry["mnist"]))
    images = images[torch.tensor(entry["image_index"])]
    rate = modality_specs(split.preprocessing)["audio"]["features"]["sample_rate"]
    folder = fsdd.fsdd_dir(root)
    waves = [fsdd.read_wav(folder / name, rate) for name in entry["audio_files"]]
    pairs = torch.stack([split.rows["image"], split.rows["audio"]], 1)
    return NaiveAVMnist(images, waves, pairs, split.labels, split.preprocessing)


def inputs_match(split: Split, dataset: NaiveAVMnist, n: int = 8) -> float:
    """Largest absolute difference between the naive items and the cached tensors of the first ``n`` pairs."""
    batch = split.batch(torch.arange(n))
    worst = 0.0
    for i in range(n):
        image, audio, _ = dataset[i]
        worst = max(
            worst,
            float((image - batch["image"][i]).abs().max()),
            float((audio - batch["audio"][i]).abs().max()),
        )
    return worst


def plain_model(model_cfg: Any) -> nn.Module:
    """The same architecture as ``model_cfg`` built without dan's speed options (``channels_last``)."""
    cfg = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if isinstance(model_cfg, DictConfig)
        else dict(model_cfg)
    )
    for tower in cfg["towers"].values():
        tower.pop("channels_last", None)
    return build_model(cfg)


def naive_batches(
    dataset: NaiveAVMnist, batch_size: int, workers: int, device: torch.device
) -> Iterator[dict[str, Tensor]]:
    """``DataLoader`` batches, endlessly, as the model's dict input."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    while True:
        for image, audio, label in loader:
            yield {"image": image.to(device), "audio": audio.to(device), "label": label.to(device)}


def naive_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[dict[str, Tensor]], None]:
    """The tutorial training step: fused plus per-modality cross-entropy, backward, AdamW step."""

    def step(batch: dict[str, Tensor]) -> None:
        out = model(batch)
        loss = F.cross_entropy(out.logits, batch["label"])
        loss = loss + sum(F.cross_entropy(lg, batch["label"]) for lg in out.modality_logits.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step
