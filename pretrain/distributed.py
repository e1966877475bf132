"""Process-group helpers and the gradient-correct all-gather used by the variance and
covariance terms."""
import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank and keeps this rank's slice.

    Each rank's loss depends on every rank's embeddings, so the gradient of the summed loss
    w.r.t. the local slice is the all-reduced gradient (as the official ``FullGatherLayer``)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size(), dim=0)[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0; identity in a single process."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x.contiguous())


def init_distributed() -> tuple[int, int, int]:
    """Initialise from torchrun / SLURM environment variables; returns (rank, world, local_rank).

    Stays single-process when no launcher variables are set."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank_, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        rank_, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local = int(os.environ.get("SLURM_LOCALID", 0))
        os.environ.setdefault("MASTER_PORT", "29500")
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError("SLURM launch without MASTER_ADDR; use tools/pretrain.py --slurm "
                               "(submitit sets it) or export MASTER_ADDR to the first node")
    else:
        return 0, 1, 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    dist.init_process_group(backend, rank=rank_, world_size=world)
    return rank_, world, local
