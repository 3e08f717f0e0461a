"""Reading image files of any size or colour mode into MNIST-shaped tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from dan.data.files import regular_file
from dan.errors import DataFormatError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_image(
    path: Path, size: int = 28, invert_light_background: bool = True, channels: int = 1
) -> Tensor:
    """An image file -> ``[channels, size, size]`` float in [0, 1]: grayscale (``channels=1``, bright strokes
    on dark) or RGB (``channels=3``).

    Grayscale photos and scans of dark digits on white paper are inverted (judged by the border's mean), so
    they look like MNIST. Unreadable or truncated files raise DataFormatError naming the file.
    """
    mode = "L" if channels == 1 else "RGB"
    regular_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            converted = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataFormatError(f"{path}: not a readable image ({exc}); replace or remove the file") from exc
    raw = torch.frombuffer(bytearray(converted.tobytes()), dtype=torch.uint8)
    x = raw.view(size, size, channels).permute(2, 0, 1).float() / 255.0
    if invert_light_background and channels == 1:
        border = torch.cat([x[0, 0], x[0, -1], x[0, :, 0], x[0, :, -1]])
        if border.mean() > 0.5:
            x = 1.0 - x
    return x.contiguous()
