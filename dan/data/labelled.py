"""Single-modality labelled splits (MNIST images, FSDD recordings, a class-folder tree): the normalisation
fitted on the training split and the :class:`Split` of each part."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from dan.data.cache import stable_hash
from dan.data.dataset import Split
from dan.data.features import FeatureConfig, Standardizer
from dan.data.pairs import require_positives
from dan.data.readers import AudioReader, ImageReader, Reader, modality_specs


def labelled_splits(
    source: str,
    modality: str,
    items: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    classes: Sequence[str],
    config: Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None = None,
    audio: FeatureConfig | None = None,
) -> dict[str, Split]:
    """Normalised :class:`Split` per part of ``items {split: [N, 1, H, W]}`` (images in [0, 1], or audio
    features) with ``labels {split: [N]}``.

    Statistics come from ``items["train"]`` only, or from ``preprocessing`` (a checkpoint's) when given.
    Every class of every split needs two samples (a positive pair); a DataFormatError names the class.
    """
    reader: Reader = ImageReader(size=int(next(iter(items.values())).shape[-1])) if modality == "image" else AudioReader(features=audio or FeatureConfig())
    if preprocessing is not None:
        reader.load_stats(modality_specs(preprocessing)[modality])
    elif modality == "image":
        train = items["train"]
        reader.set_stats(float(train.mean()), float(train.std()))
    else:
        st = Standardizer.fit(items["train"])
        reader.set_stats(st.mean, st.std)
    for k, y in labels.items():
        require_positives(y, f"{source} split {k}", list(classes))
    spec = {"modalities": {modality: reader.spec()}, "classes": [str(c) for c in classes]}
    manifest_hash = stable_hash(
        {"data": dict(config), "sizes": {k: len(y) for k, y in labels.items()}, "labels": [y.tolist() for y in labels.values()]}
    )
    return {
        k: Split.aligned(
            k, {modality: reader.normalise(x)}, labels[k], manifest_hash=manifest_hash, preprocessing=spec, source=source
        )
        for k, x in items.items()
    }
