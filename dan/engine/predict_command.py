"""``dan predict CHECKPOINT [--input MODALITY=PATH ...] [--image PATH] [--audio PATH] [--json]``: the class,
its probability and each modality head's prediction. Any subset of the model's modalities may be given."""

from __future__ import annotations

import argparse
import json

from dan.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``CHECKPOINT``, ``--input m=path`` (repeatable), ``--image``, ``--audio``, ``--json``."""
    parser.add_argument("checkpoint", help="a .pt file written by dan train")
    parser.add_argument(
        "--input", action="append", default=[], metavar="MODALITY=PATH",
        help="an input file of one modality, e.g. --input image=x.png --input vector=v.npy (repeatable)",
    )
    parser.add_argument("--image", default=None, help="shorthand for --input image=PATH")
    parser.add_argument("--audio", default=None, help="shorthand for --input audio=PATH (any rate, channels)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def parse_inputs(args: argparse.Namespace) -> dict[str, str]:
    """``{modality: path}`` from ``--input``, ``--image`` and ``--audio``."""
    inputs: dict[str, str] = {}
    for item in args.input:
        modality, sep, path = item.partition("=")
        if not sep or not modality or not path:
            raise ConfigError(f"--input {item!r} is not of the form MODALITY=PATH (e.g. --input image=digit.png)")
        inputs[modality] = path
    for modality in ("image", "audio"):
        if getattr(args, modality) is not None:
            inputs[modality] = getattr(args, modality)
    if not inputs:
        raise ConfigError("give at least one input: --input MODALITY=PATH, --image PATH or --audio PATH")
    return inputs


def check_kinds(inputs: dict[str, str], kinds: dict[str, str]) -> None:
    """A file given for a modality whose reader reads another kind of file is named, with the flag that fits."""
    from dan.data.readers import file_kind

    for m, path in inputs.items():
        kind = file_kind(path)
        if m in kinds and kind is not None and kinds[m] in ("image", "audio") and kind != kinds[m]:
            fit = [n for n, k in kinds.items() if k == kind]
            hint = f"pass it as --input {fit[0]}={path}" if fit else f"this model takes no {kind} input"
            raise ConfigError(f"{path} looks like {'an image' if kind == 'image' else 'a recording'}, but {m} reads "
                              f"{'images' if kinds[m] == 'image' else 'recordings'}; {hint}")


def run(args: argparse.Namespace) -> int:
    """Load, predict, print."""
    from dan.api import load

    inputs = parse_inputs(args)
    model = load(args.checkpoint)
    check_kinds(inputs, {m: model.preprocessing.reader(m).kind for m in model.modalities})
    result = model.predict(inputs)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"class {result['label']} (p={result['probability']:.3f}) from {' + '.join(result['used'])}")
    for m, r in result["modalities"].items():
        print(f"  {m} head: class {r['label']} (p={r['probability']:.3f})")
    return 0
