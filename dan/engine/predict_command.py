"""``dan predict CHECKPOINT --image x.png --audio y.wav [--json]``: the digit, its probability and the
per-modality probabilities. Either input may be left out."""

from __future__ import annotations

import argparse
import json

from dan.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CHECKPOINT``, ``--image``, ``--audio``, ``--json``."""
    parser.add_argument("checkpoint", help="a .pt file written by dan train")
    parser.add_argument("--image", default=None, help="an image file of any size or colour mode")
    parser.add_argument("--audio", default=None, help="a WAV file of any sample rate or channel count")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    """Load, predict, print."""
    from dan.api import load

    if args.image is None and args.audio is None:
        raise ConfigError("give --image PATH and/or --audio PATH")
    model = load(args.checkpoint)
    result = model.predict(image=args.image, audio=args.audio)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"digit {result['digit']} (p={result['probability']:.3f}) from {' + '.join(result['used'])}")
    for m, r in result["modalities"].items():
        print(f"  {m} head: digit {r['digit']} (p={r['probability']:.3f})")
    return 0
