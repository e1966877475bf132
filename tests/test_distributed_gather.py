"""Variance and covariance on embeddings gathered across processes, with correct gradients.

Two gloo processes on the CPU each hold half of a batch. With DDP's gradient averaging, the
gradient each process obtains for its half must equal the single-process gradient of the same
loss on the whole batch, and the loss terms must be identical (inv on the local half averages to
the whole-batch inv).
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrain.distributed import all_gather_with_grad
from pretrain.losses import global_vicreg_terms, local_vicreg_terms

WORLD = 2


def make_batch():
    g = torch.Generator().manual_seed(0)
    emb = [torch.randn(8, 16, generator=g, dtype=torch.float64) for _ in range(3)]
    maps = [torch.randn(8, p, 6, generator=g, dtype=torch.float64) for p in (9, 9, 4)]
    locs = [torch.rand(8, n, n, 2, generator=g, dtype=torch.float64) * 50 for n in (3, 3, 2)]
    return emb, maps, locs


def total_loss(emb, maps, locs, gather):
    terms = global_vicreg_terms(emb, gather=gather)
    terms.update(local_vicreg_terms(maps, locs, (4, 2), False, gather=gather))
    return terms


def worker(rank, port, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    emb, maps, locs = make_batch()
    half = slice(rank * 4, rank * 4 + 4)
    emb = [e[half].clone().requires_grad_() for e in emb]
    maps = [m[half].clone().requires_grad_() for m in maps]
    locs = [g[half] for g in locs]
    terms = total_loss(emb, maps, locs, all_gather_with_grad)
    sum(terms.values()).backward()
    # DDP averages gradients over processes
    # numpy arrays travel by value: shared tensor storage would vanish with this process
    queue.put((rank, {k: float(v.detach()) for k, v in terms.items()},
               [(e.grad / WORLD).numpy() for e in emb], [(m.grad / WORLD).numpy() for m in maps]))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_gather_matches_single_process():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in range(WORLD))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    emb, maps, locs = make_batch()
    emb = [e.clone().requires_grad_() for e in emb]
    maps = [m.clone().requires_grad_() for m in maps]
    terms = total_loss(emb, maps, locs, lambda x: x)
    sum(terms.values()).backward()

    for key, value in terms.items():
        mean_over_ranks = sum(r[1][key] for r in results) / WORLD
        expected = float(value.detach())
        assert abs(mean_over_ranks - expected) <= 1e-9 * abs(expected), key
    for rank, _, emb_grads, map_grads in results:
        half = slice(rank * 4, rank * 4 + 4)
        for full, part in zip(emb + maps, emb_grads + map_grads):
            torch.testing.assert_close(torch.from_numpy(part), full.grad[half], rtol=1e-9, atol=1e-12)
