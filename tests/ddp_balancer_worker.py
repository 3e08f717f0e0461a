"""Run by ``torchrun --nproc_per_node=2`` from tests/test_balancer_ddp.py: a small DANModel under DDP
(gloo) trained a few AdamW steps with one balancer, each rank on its own data, the engine's order of
calls (on_epoch_start, then per step combine, backward, balancer-parameter gradient averaging,
after_backward, step, after_step).
Rank 0 writes, per balancer, the largest difference between the ranks' parameters and balancer state."""

from __future__ import annotations

import gc
import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dan.engine.distributed import DistInfo, average_gradients
from dan.engine.evaluate import head_losses_mean
from dan.engine.trainer import head_losses
from dan.losses import EpochContext, StepContext, build_balancer
from dan.models import build_model

CLASSES = 4
CONFIGS = {  # diagnose after this worker's one epoch; re-balance from the first step
    "relearning": {"every": 1}, "umt": {"teacher_epochs": 1}, "greedy": {"start_epoch": 0, "epsilon": 0.0, "window": 2},
}
FUSION = {"mla": "sum"}  # one head shared by the modalities


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().float().reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def tensors(state: object) -> list[torch.Tensor]:
    """Every floating tensor in ``state`` (a state dict, with extra state: prototypes, teachers' weights)."""
    if isinstance(state, torch.Tensor):
        return [state] if state.is_floating_point() else []
    if isinstance(state, dict):
        return [t for v in state.values() for t in tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in tensors(v)]
    return []


def spread(t: torch.Tensor, world: int) -> float:
    """Largest absolute difference of ``t`` between ranks."""
    gathered = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(gathered, t)
    return max(float((g - gathered[0]).abs().max()) if g.numel() else 0.0 for g in gathered)


def run(name: str, rank: int, world: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(
        {
            "num_classes": CLASSES, "dim": 16, "modality_dropout": 0.2,
            "towers": {"image": {"name": "image_cnn", "channels": [4, 8]}, "audio": {"name": "audio_cnn", "n_mels": 8}},
            "trunk": {"name": "mlp", "share": True}, "fusion": {"name": FUSION.get(name, "concat")},
            "mid_fusion": {"name": "mmtm"} if name == "greedy" else None,
        }
    )
    balancer = build_balancer({"name": name, **CONFIGS.get(name, {})}, model.modalities)
    wrapped = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    extra = list(balancer.parameters())
    module_opt = torch.optim.AdamW(extra, lr=0.01, weight_decay=0.0) if extra else None
    info = DistInfo(rank=rank, world_size=world, local_rank=rank)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    torch.manual_seed(7 + rank)  # and its own modality-dropout draws

    def make_batch() -> dict[str, torch.Tensor]:
        return {
            "image": torch.randn(16, 1, 28, 28, generator=g),
            "audio": torch.randn(16, 1, 8, 20, generator=g),
            "label": torch.randint(0, CLASSES, (16,), generator=g),
        }

    loaders = {"train": [make_batch() for _ in range(2)], "heldout": [make_batch()], "val": [make_batch()]}

    def epoch_context(epoch: int) -> EpochContext:
        return EpochContext(
            epoch, model, loaders=loaders, optimizer=optimizer,
            measure=lambda m, batches: head_losses_mean(m, batches, model.modalities, torch.device("cpu")),
            new_optimizer=lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.05),
        )

    # gradient blending estimates here from copies trained on this rank's shard
    balancer.on_epoch_start(epoch_context(0))
    moved = max(abs(w - 1 / 3) for h, w in balancer.weights().items() if h in balancer.heads)
    for step in range(4):
        batch = make_batch()
        out = wrapped(batch)
        fused, per = head_losses(out, batch["label"])
        ctx = StepContext(model, batch, out, 0, step, forward=wrapped, optimizer=optimizer, batch_index=step, batches=4)
        loss = balancer.combine(fused, per, ctx)
        optimizer.zero_grad(set_to_none=True)
        if module_opt:
            module_opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(extra, info)
        balancer.after_backward(ctx)
        optimizer.step()
        if module_opt:
            module_opt.step()
        balancer.after_step(ctx)
    balancer.on_epoch_end(epoch_context(1))  # re-learning diagnoses here, on each rank's own embeddings
    state = tensors(dict(balancer.state_dict()))
    weights = torch.tensor(list(balancer.weights().values()))
    del wrapped, ctx, out, loss  # a DDP wrapper alive when its process group is destroyed can abort gloo
    gc.collect()
    return {
        "moved": moved,
        "params": spread(flat(list(model.parameters())), world),
        "balancer_state": spread(flat(state), world),
        "balancer_weights": spread(weights, world),
    }


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    results = {name: run(name, rank, world) for name in sys.argv[2:]}
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
