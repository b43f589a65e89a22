"""SFAL semantic-functional alignment: NDCG of the co-occurrence (Phi) ranking against explanation similarity.

For each feature i, the other features are ranked twice: by Phi with i (functional) and by cosine similarity
of explanation embeddings with i (semantic); self-pairs are excluded and ties are broken by feature index
ascending. With ``top_n`` (capped at d - 1), a feature at semantic rank r has relevance
``max(0, 1.1^(top_n - r) - 1)``; ``DCG = sum_{r < top_n} rel(phi_order[r]) / log2(r + 2)``, and NDCG divides
by the ideal DCG (the semantic order itself). Features without an explanation carry a zero vector, whose
cosine with anything is 0 (SFAL's rule).
"""

from __future__ import annotations

import torch

DEFAULT_TOP_N = 1023


def cosine_similarity(vectors: torch.Tensor) -> torch.Tensor:
    """``[d, dim]`` -> ``[d, d]``; rows of zeros give similarity 0."""
    v = vectors.to(torch.float64)
    norms = v.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, v / norms.clamp_min(1e-300), torch.zeros((), dtype=v.dtype, device=v.device))
    return unit @ unit.T


def _order(scores: torch.Tensor) -> torch.Tensor:
    """Column indices by descending score, ties by index ascending (stable sort)."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def ndcg_scores(phi: torch.Tensor, semantic: torch.Tensor, top_n: int = DEFAULT_TOP_N,
                block: int = 512) -> torch.Tensor:
    """Per-feature NDCG@top_n, ``[d]`` float64, from ``phi`` and ``semantic`` similarity matrices ``[d, d]``.

    Rows are processed in blocks, so memory is ``block x d`` whatever ``d``; runs on the matrices' device.
    """
    d = phi.shape[0]
    if d < 2:
        raise ValueError("NDCG needs at least two features.")
    top_n = min(top_n, d - 1)
    device = phi.device
    ranks = torch.arange(d - 1, device=device, dtype=torch.float64)
    gain_by_rank = torch.clamp(1.1 ** (top_n - ranks) - 1, min=0)  # relevance of semantic rank r
    discount = 1 / torch.log2(torch.arange(top_n, device=device, dtype=torch.float64) + 2)
    ideal = (gain_by_rank[:top_n] * discount).sum()
    out = torch.empty(d, dtype=torch.float64, device=device)
    for start in range(0, d, block):
        rows = torch.arange(start, min(start + block, d), device=device)
        b = rows.shape[0]
        self_mask = torch.zeros((b, d), dtype=torch.bool, device=device)
        self_mask[torch.arange(b, device=device), rows] = True
        # drop the self column, keeping the others in index order, so stable sorts break ties by index
        keep = (~self_mask).nonzero()[:, 1].view(b, d - 1)
        p = phi[rows].to(torch.float64).gather(1, keep)
        s = semantic[rows].to(torch.float64).gather(1, keep)
        sem_rank = torch.empty_like(s)
        sem_rank.scatter_(1, _order(s), ranks.expand(b, -1).contiguous())
        relevance = gain_by_rank[sem_rank.long()]  # [b, d-1]
        dcg = (relevance.gather(1, _order(p)[:, :top_n]) * discount).sum(1)
        out[rows] = dcg / ideal
    return out
