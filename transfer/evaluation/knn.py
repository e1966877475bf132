"""Exact cosine k-nearest-neighbour search in chunks (pure torch), shared by the global k-NN
classifier (classification.py) and the dense retrieval (dense_retrieval.py), beside it.

Exact search with ``torch.topk`` over matrix-product chunks, not faiss: faiss is not a pinned
dependency of the suite, and at these sizes (an ImageNet train bank of 1.28M x 2048, a dense
memory of a few million cells) exact search on a GPU takes minutes, so an approximate index
would only add a source of error. Memory stays bounded: at most ``query_chunk x bank_chunk``
similarities exist at a time.
"""
import torch
import torch.nn.functional as F


class NonFiniteError(ValueError):
    """NaN or inf where an evaluation needs finite numbers (features, a loss)."""


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` unchanged, or ``NonFiniteError`` naming ``what``: NaN or inf features pass the
    search and the vote without an error, into wrong numbers (NaN similarities are never
    ranked, and the vote then counts whatever was picked)."""
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        raise NonFiniteError(f"{what}: {int((~finite).sum())} of {x.numel()} values are NaN or "
                             "inf; expected finite features")
    return x


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    return F.normalize(x.float(), dim=-1)


def _merge_topk(best: tuple[torch.Tensor, torch.Tensor] | None, sims: torch.Tensor,
                idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if best is not None:
        sims, idx = torch.cat([best[0], sims], 1), torch.cat([best[1], idx], 1)
    top, where = sims.topk(min(k, sims.shape[1]), dim=1)
    return top, idx.gather(1, where)


def topk_cosine(queries: torch.Tensor, bank: torch.Tensor, k: int, bank_chunk: int = 65536,
                query_chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` bank rows most similar to each query row: (similarities, indices), both
    (Q, min(k, len(bank))), similarities descending. Rows must be L2-normalised already (the
    search runs on the bank's device; queries are moved there chunk by chunk)."""
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and bank {tuple(bank.shape)} must be "
                         "2-D with the same feature size")
    if len(bank) == 0:
        raise ValueError("the memory bank is empty")
    sims_out, idx_out = [], []
    for q0 in range(0, len(queries), query_chunk):
        q = queries[q0:q0 + query_chunk].to(bank.device, bank.dtype)
        best = None
        for b0 in range(0, len(bank), bank_chunk):
            sims = q @ bank[b0:b0 + bank_chunk].T
            local = sims.topk(min(k, sims.shape[1]), dim=1)
            best = _merge_topk(best, local.values, local.indices + b0, k)
        sims_out.append(best[0])
        idx_out.append(best[1])
    return torch.cat(sims_out), torch.cat(idx_out)
