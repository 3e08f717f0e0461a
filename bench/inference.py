"""Benchmark: single-pair latency (p50/p99) and batched throughput of the DAN model in eval mode, run
eager, with ``torch.compile``, as a ``torch.export`` ExportedProgram, and as ONNX in onnxruntime; every
runtime's logits are checked against eager on the same inputs.

Weights are the freshly initialised model of the config (speed does not depend on their values).

    python bench/inference.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, print_table, save, set_threads, sync  # noqa: E402

from dan.config import load_config  # noqa: E402
from dan.models import build_model  # noqa: E402

TARGET_P50_MS = 2.0
PARITY_ATOL = 1e-4


class LogitsOnly(nn.Module):
    """``(image [B, 1, 28, 28], audio [B, 1, F, T]) -> fused logits [B, C]``: the tensor-in, tensor-out
    form every runtime (ONNX included) can take."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, audio: Tensor) -> Tensor:
        return self.model({"image": image, "audio": audio}).logits


def inputs(batch: int, audio_shape: tuple[int, int], device: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 1, 28, 28, generator=g)
    audio = torch.randn(batch, 1, *audio_shape, generator=g)
    return image.to(device), audio.to(device)


def latency(
    fn: Callable[[Tensor, Tensor], Any], x: tuple[Tensor, Tensor], calls: int, device: str
) -> dict[str, float]:
    """p50/p99 milliseconds of single calls."""
    for _ in range(max(10, calls // 10)):
        fn(*x)
    sync(device)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(*x)
        sync(device)
        times.append(1000 * (time.perf_counter() - t))
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))]}


def throughput(
    fn: Callable[[Tensor, Tensor], Any], x: tuple[Tensor, Tensor], calls: int, device: str
) -> float:
    """Pairs/s over ``calls`` batched calls."""
    fn(*x)
    sync(device)
    t = time.perf_counter()
    for _ in range(calls):
        fn(*x)
    sync(device)
    return x[0].shape[0] * calls / (time.perf_counter() - t)


def runtimes(net: LogitsOnly, example: tuple[Tensor, Tensor], threads: int, device: str) -> dict[str, Any]:
    """``{name: (callable, build seconds)}`` for every runtime that builds here."""
    out: dict[str, Any] = {"eager": (net, 0.0)}
    t = time.perf_counter()
    compiled = torch.compile(net)
    compiled(*example)  # the first call compiles (other batch sizes recompile during warm-up)
    out["compile"] = (compiled, time.perf_counter() - t)
    batch = torch.export.Dim("batch", min=1, max=4096)
    t = time.perf_counter()
    program = torch.export.export(net, example, dynamic_shapes=({0: batch}, {0: batch}))
    out["export"] = (program.module(), time.perf_counter() - t)
    if device == "cpu":
        out["onnxruntime"] = onnx_runtime(program, threads)
    return out


def onnx_runtime(program: Any, threads: int) -> tuple[Callable[[Tensor, Tensor], Any], float]:
    """The ExportedProgram ``program`` (dynamic batch) converted to ONNX by the torch.export-based
    exporter (needs ``onnxscript``) in an onnxruntime CPU session, and the seconds that took."""
    import onnxruntime as ort

    t = time.perf_counter()
    path = Path(tempfile.mkdtemp(prefix="dan-onnx-")) / "dan.onnx"
    torch.onnx.export(
        program, f=str(path), dynamo=True, input_names=["image", "audio"], output_names=["logits"]
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(image: Tensor, audio: Tensor) -> Any:
        return session.run(None, {"image": image.numpy(), "audio": audio.numpy()})[0]

    return run, time.perf_counter() - t


def measure(config: str, args: Any) -> list[dict[str, Any]]:
    cfg = load_config(config, [f"device={args.device}"])
    torch.manual_seed(0)
    net = LogitsOnly(build_model(cfg.model)).to(args.device).eval()
    features = cfg.data.get("audio", {})
    audio_shape = (features.get("n_mels", 40), 8000 // features.get("hop_length", 128) + 1)
    single = inputs(1, audio_shape, args.device, seed=1)
    batched = inputs(args.batch, audio_shape, args.device, seed=2)
    parity_in = inputs(7, audio_shape, args.device, seed=3)
    rows = []
    with torch.no_grad():
        want = net(*parity_in)
        for name, (fn, build_s) in runtimes(
            net, inputs(2, audio_shape, args.device), args.threads, args.device
        ).items():
            lat = latency(fn, single, args.calls, args.device)
            got = torch.as_tensor(fn(*parity_in)).to(want.device)
            rows.append(
                {
                    "config": config,
                    "runtime": name,
                    **lat,
                    "batch": args.batch,
                    "batched_pairs_per_s": throughput(fn, batched, args.batch_calls, args.device),
                    "max_abs_diff": float((got - want).abs().max()),
                    "parity_ok": bool(torch.allclose(got, want, atol=PARITY_ATOL, rtol=1e-4)),
                    "build_s": build_s,
                }
            )
    return rows


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--configs", nargs="+", default=["avmnist_concat_offline", "avmnist_fast"])
    parser.add_argument("--calls", type=int, default=300, help="timed single-pair calls")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch-calls", type=int, default=10)
    args = parser.parse_args()
    if args.quick:
        args.calls, args.batch, args.batch_calls, args.configs = 20, 16, 2, args.configs[-1:]
    set_threads(args.threads)
    rows = [row for c in args.configs for row in measure(c, args)]
    print_table(rows)
    result = {
        "target_p50_ms": TARGET_P50_MS,
        "parity_atol": PARITY_ATOL,
        "results": rows,
    }
    save("inference", args, result)
    if not all(r["parity_ok"] for r in rows):
        sys.exit("parity check failed: a runtime's logits differ from eager")


if __name__ == "__main__":
    main()
