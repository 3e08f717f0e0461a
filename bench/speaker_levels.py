"""Analysis: how far each FSDD speaker's background lies under the speech, in the features dan computes.

Per recording (unpadded, at the default front end's rate, FFT, hop and mel bands, no ``top_db`` floor): the
5th and 25th percentile of its log-mel bins in dB under the recording's peak bin, and the spread in dB between
its loudest and quietest frame (frame level: the mean dB over the mel bands). Printed as the mean over each
speaker's recordings. A speaker recorded over a noise floor has high percentiles and a small spread.

    DAN_DATA=../shared/data python bench/speaker_levels.py
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import replace

import torch

from dan.data.features import FeatureConfig, spectrogram_transform
from dan.data.fsdd import index_recordings, read_wav
from dan.paths import data_root


def levels(wave: torch.Tensor, front_end: torch.nn.Module) -> list[float]:
    """``wave [T]`` -> [5th percentile, 25th percentile, frame spread], all in dB (percentiles under the peak)."""
    db = front_end(wave)  # [n_mels, frames]
    under_peak = (db - db.max()).flatten()
    frames = db.mean(dim=0)
    return [
        float(torch.quantile(under_peak, 0.05)),
        float(torch.quantile(under_peak, 0.25)),
        float(frames.max() - frames.min()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="data root (default $DAN_DATA)")
    args = parser.parse_args()
    cfg = FeatureConfig()
    front_end = spectrogram_transform(replace(cfg, top_db=math.inf))  # no floor
    per_speaker: dict[str, list[list[float]]] = defaultdict(list)
    for rec in index_recordings(data_root(args.root)):
        per_speaker[rec.speaker].append(levels(read_wav(rec.path, cfg.sample_rate), front_end))
    print("| speaker | recordings | 5th percentile, dB under peak | 25th percentile | loudest - quietest frame, dB |")
    print("| --- | --- | --- | --- | --- |")
    for speaker, rows in sorted(per_speaker.items()):
        p5, p25, spread = torch.tensor(rows).mean(dim=0).tolist()
        print(f"| {speaker} | {len(rows)} | {p5:.1f} | {p25:.1f} | {spread:.1f} |")


if __name__ == "__main__":
    main()
