"""Nearest-neighbour matching between two sets of local feature vectors.

Semantics of the official ``neirest_neighbores`` (commit 803ae4c), vectorised:
for every position p of X take its nearest candidate q*(p) = argmin_q dist[p, q] (``topk(1)``,
as the official code); keep the k positions with the smallest such distance and return them in
ascending position order, not in distance order (the order decides which slots are stacked
together for the per-slot covariance).

Exact ties between those distances occur with location grids (views sharing a box). The
official code ranks with ``torch.sort``'s default (non-stable) algorithm, and so do we. Which
of several exactly tied positions is kept then depends on the CPU's sort kernel, in the
official code as here: on the machine the reference figures were made on, this reproduced the
``multicrop_tied_locations`` case to 1e-5; on an AVX-512 machine its local terms differ by up
to 8e-3 relative, and a stable sort by up to 1e-2 (``tests/test_loss_equivalence.py``).
"""
import torch


def nearest_neighbors(distances: torch.Tensor, num_matches: int | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Match rows to columns of ``distances`` (B, P, Q).

    Returns ``(x_index, y_index)``, both (B, S) with S = min(k, P), or P when ``num_matches``
    is None or negative. Deviation: the official code crashes when k > P; we keep all P.
    """
    best_distance, best_index = (t.squeeze(-1) for t in distances.topk(1, dim=-1, largest=False))
    num_positions = distances.shape[1]
    k = num_positions if num_matches is None or num_matches < 0 else min(num_matches, num_positions)
    if k == num_positions:
        x_index = torch.arange(num_positions, device=distances.device).expand(distances.shape[0], -1)
    else:
        ranked = torch.sort(best_distance, dim=1).indices[:, :k]
        x_index = ranked.sort(dim=1).values
    return x_index, best_index.gather(1, x_index)


def select_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` (B, P, C), ``index`` (B, S) -> (B, S, C)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
