"""Benchmark: what each choice of the fast config buys. Runs time_to_accuracy.py's timed process once
per variant (the shipped fast config with one change, or the default config) and records time to the
target and the final test accuracy.

    DAN_DATA=../shared/data python bench/ablation.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, command, print_table, write_result  # noqa: E402
from time_to_accuracy import TARGET, timed_run  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"

NO_AUDIO_AUGMENT = "augment.audio=null"
GRID_IMAGE_TOWER = "model.towers.image={readout: grid, grid: 2, channels: [8, 16], dropout: 0}"

# name -> (config, overrides, threads or None for --threads)
VARIANTS: dict[str, tuple[str, list[str], int | None]] = {
    "fast (shipped)": ("avmnist_fast", [], None),
    "default config (avmnist_concat_offline)": ("avmnist_concat_offline", [], None),
    "audio_cnn tower instead of audio_tcn": (str(CONFIGS / "avmnist_fast_audio_cnn.yaml"), [], None),
    "4 grid tokens, channels 8-16 (before) instead of flatten 16-32": ("avmnist_fast", [GRID_IMAGE_TOWER], None),
    "no audio augmentation": ("avmnist_fast", [NO_AUDIO_AUGMENT], None),
    "no per-utterance normalisation": ("avmnist_fast", ["data.audio.utterance_norm=false"], None),
    "top_db 80 instead of 40": ("avmnist_fast", ["data.audio.top_db=80"], None),
    "channels_last off": ("avmnist_fast", ["model.towers.image.channels_last=false"], None),
    "batch 64 instead of 128": ("avmnist_fast", ["train.batch_size=64"], None),
    "lr 0.01 instead of 0.02": ("avmnist_fast", ["optimizer.lr=0.01"], None),
    "4 epochs instead of 6": ("avmnist_fast", ["train.epochs=4"], None),
    "1 thread instead of 2": ("avmnist_fast", [], 1),
}


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--only", nargs="*", help="run just these variant names")
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    if args.quick:
        names = names[:1]
    rows: list[dict[str, Any]] = []
    for name in names:
        config, overrides, threads = VARIANTS[name]
        if args.quick:
            overrides = [*overrides, "train.epochs=1"]
        run_args = SimpleNamespace(
            config=config,
            device=args.device,
            threads=threads or args.threads,
            target=TARGET,
            metric="acc",
            overrides=overrides,
        )
        run = timed_run(run_args, seed=0)
        rows.append(
            {
                "variant": name,
                "config": Path(config).stem,
                "overrides": " ".join(overrides),
                "threads": run_args.threads,
                "epochs_run": len(run["epochs"]),
                "final_test_acc": run["final_test_acc"],
                "time_to_acc_s": run["time_to_accuracy_s"],
                "last_epoch_end_s": run["epochs"][-1]["s"] if run["epochs"] else None,
            }
        )
        print_table(rows[-1:])
    print()
    print_table(rows)
    result = {"target_acc": TARGET, "device": args.device, "variants": rows, "command": command()}
    print("wrote", write_result("ablation", result, args.out, quick=args.quick))


if __name__ == "__main__":
    main()
