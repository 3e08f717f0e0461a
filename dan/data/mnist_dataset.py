"""MNIST images alone, as the registered ``mnist`` dataset (Siamese verification, image-only baselines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dan.data.dataset import Split
from dan.data.labelled import labelled_splits
from dan.data.registry import register_dataset
from dan.data.splits import parse_split
from dan.errors import ConfigError
from dan.paths import data_root

OFFLINE_SPLITS = {"train": "test[:7000]", "val": "test[7000:8000]", "test": "test[8000:]"}


@register_dataset("mnist")
@dataclass
class MnistDataset:
    """``splits``: ``{split: spec}`` over the official files (default: the offline carve-out of the 10,000
    test images); ``root``: the data root (default ``$DAN_DATA``)."""

    root: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: dict(OFFLINE_SPLITS))

    def __post_init__(self) -> None:
        from dan.data.mnist import MNIST_SPLITS

        self.splits = dict(self.splits or OFFLINE_SPLITS)
        self.specs = {k: parse_split(v, MNIST_SPLITS) for k, v in self.splits.items()}
        missing = {"train", "val", "test"} - set(self.specs)
        if missing:
            raise ConfigError(f"data.splits lacks {', '.join(sorted(missing))}; give train, val and test")

    def input_shapes(self) -> dict[str, list[int]]:
        """``{m: item shape}`` of the built splits, known without reading data."""
        return {"image": [1, 28, 28]}

    def verify(self) -> list[Any]:
        """The official files against their md5s (``dan data verify mnist``)."""
        from dan.data.verify import verify_mnist_files

        return verify_mnist_files(data_root(self.root))

    def build(self, preprocessing: Mapping[str, Any] | None = None, only: Sequence[str] | None = None) -> dict[str, Split]:
        from dan.data.mnist import load_mnist

        names = [k for k in self.specs if (only is None or k in only) or (preprocessing is None and k == "train")]
        root = data_root(self.root)
        loaded = {base: load_mnist(root, base) for base in sorted({self.specs[k].base for k in names})}
        items, labels = {}, {}
        for k in names:
            images, y = loaded[self.specs[k].base]
            idx = torch.tensor(list(self.specs[k].resolve(len(y))), dtype=torch.long)
            items[k], labels[k] = images[idx].float().div(255.0).unsqueeze(1), y[idx].long()
        splits = labelled_splits("mnist", "image", items, labels, [str(d) for d in range(10)], asdict(self), preprocessing)
        return {k: v for k, v in splits.items() if only is None or k in only}
