"""SFAL semantic-functional alignment: NDCG of the co-occurrence (Phi) ranking against explanation similarity.

For each feature i, the other features are ranked twice: by Phi with i (functional) and by cosine similarity
of explanation embeddings with i (semantic); self-pairs are excluded. With ``top_n`` (capped at d - 1), semantic
rank r carries the gain ``g(r) = max(0, 1.1^(top_n - r) - 1)`` (0 from rank top_n on), the discount of rank r is
``1 / log2(r + 2)``, and NDCG = DCG / ideal DCG. Features without an explanation carry a zero vector, whose
cosine with anything is 0 (SFAL's rule).

Ties. Both similarities are snapped to a grid of 2^-30 before anything is ranked
(:func:`~sae_assets.core.common.ties.snap`: float64 rounding noise is ~1e-16, real differences are far above 1e-9),
and values on the same grid point are ties. The gain 1.1^(top_n - r) makes the first ranks decide the score, so
the score must not depend on how tied neighbours happen to be ordered; it is tie-aware (McSherry & Najork 2008,
"Computing information retrieval performance measures efficiently in the presence of tied scores"):

- semantic ties: the members of a group of tied neighbours spanning ranks a..b-1 each have relevance
  ``mean(g(a), ..., g(b-1))``. A group that straddles the cut-off (a < top_n < b) averages over all b - a ranks,
  those from top_n on gaining 0, so its members past the cut-off are relevant too, each as much as those before it.
- Phi ties: a group of tied neighbours spanning ranks a..b-1 puts the mean relevance of its members at each of its
  ranks: ``DCG = sum over groups of mean(rel of members) * sum_{a <= r < min(b, top_n)} 1 / log2(r + 2)``. A group
  straddling the cut-off takes the mean over all its members, those ranked past the cut-off included, weighted by
  the discounts of its ranks before the cut-off only.
- the ideal DCG is the semantic order's own: ``sum_{r < top_n} rel(semantic_order[r]) / log2(r + 2)``, with the
  averaged relevances, so it too is the same whichever tied neighbour is listed first.

Hence a feature's score is a function of the two snapped rows as multisets of (Phi, cosine) pairs: permuting the
features permutes the scores (equal up to float64 summation order, ~1e-16), and no tie is broken by feature index.
A feature whose semantic row ties throughout (no explanation: cosine 0 with every feature) scores 1, since every
ranking of equally relevant neighbours is ideal. Without ties this is the plain NDCG of SFAL's definition.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sae_assets.core.alignment.tied_ndcg import tied_ndcg
from sae_assets.core.common.progress import Progress
from sae_assets.core.common.ranking_torch import prepare_top_order
from sae_assets.core.common.similarity import phi_rows, phi_scale, unit_rows
from sae_assets.core.common.ties import snap

DEFAULT_TOP_N = 1023
CACHE_BYTES = 1 << 22
"""Phi rows computed together on a CPU: about what two cores' caches hold."""
RowScores = Callable[[torch.Tensor], torch.Tensor]
"""``rows [b]`` (feature indices) -> similarity of those features with every feature ``[b, d]``."""


def phi_from_counts(counts: torch.Tensor, n_windows: int, rows: torch.Tensor | None = None,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Phi coefficients (float64) from co-occurrence counts ``[d, d]`` over ``n_windows`` windows: ``[d, d]``,
    or ``[len(rows), d]`` for the given rows only (so a large SAE can be scored block by block), written into
    ``out`` (contiguous float64 of that shape) when given.

    For features i, j with the 2x2 contingency over windows (both, i only, j only, neither):
    ``phi = (N c_ij - c_i c_j) / sqrt(c_i (N - c_i) c_j (N - c_j))``, with ``c_i = C[i, i]``; 0 where a
    feature is present in no window or in every window (the coefficient is undefined there). The formula is
    :func:`~sae_assets.core.common.similarity.phi_rows`'s (the viewer's too); here it runs on row blocks.
    """
    marg = counts.diagonal().to(torch.float64)
    inv_sd = torch.from_numpy(phi_scale(marg.cpu().numpy(), n_windows)).to(marg.device)  # [d]; 0 where undefined
    if rows is None:
        rows = torch.arange(counts.shape[0], device=counts.device)
    d = counts.shape[1]
    if out is None:
        out = torch.empty((rows.shape[0], d), dtype=torch.float64, device=counts.device)
    # a few MiB of rows at a time on a CPU, so the four passes over them run in cache (half the time of whole blocks)
    step = rows.shape[0] if counts.device.type != "cpu" else max(1, CACHE_BYTES // (8 * d))
    consecutive = _consecutive(rows)
    for s in range(0, rows.shape[0], step):
        r, o = rows[s : s + step], out[s : s + step]
        o.copy_(counts.narrow(0, int(rows[0]) + s, r.shape[0]) if consecutive else counts.index_select(0, r))
        phi_rows(o, n_windows, marg[r], marg, inv_sd[r], inv_sd)  # in place: the numerator fused in one pass
    return out


def _consecutive(rows: torch.Tensor) -> bool:
    """Whether ``rows`` is a run of consecutive indices (SFAL's blocks), read with ``narrow`` instead of a gather."""
    b = rows.shape[0]
    return bool(b) and int(rows[-1] - rows[0]) == b - 1 and bool((rows.diff() == 1).all())


def ndcg_by_rows(phi_rows: RowScores, semantic_rows: RowScores, d: int, device: torch.device | str,
                 top_n: int = DEFAULT_TOP_N, block: int = 512,
                 report: Callable[[str], None] | None = None) -> torch.Tensor:
    """Per-feature tie-aware NDCG@top_n ``[d]`` float64 (the module's definition), asking for ``block`` rows of each
    similarity at a time, so memory is ``block x d`` whatever ``d``; runs on ``device``. The rows handed back are
    snapped to the tie grid in place.

    Only the top_n of each ranking matter (relevance is 0 from semantic rank top_n on, but for the members of a
    tied group straddling the cut-off), so each row needs two partial selections of top_n + 1 columns
    (:func:`~sae_assets.core.common.ranking.top_order`), not two full sorts; rows whose group at the cut-off goes on
    past it also compare the whole row with that group's value
    (:func:`~sae_assets.core.alignment.tied_ndcg.tied_ndcg`)."""
    if d < 2:
        raise ValueError("NDCG needs at least two features.")
    top_n = min(top_n, d - 1)
    ranks = torch.arange(top_n, device=device, dtype=torch.float64)
    gains = 1.1 ** (top_n - ranks) - 1  # gain of semantic rank r < top_n
    discount = 1 / torch.log2(ranks + 2)
    out = torch.empty(d, dtype=torch.float64, device=device)
    relevance_rows = torch.zeros((min(block, d), d), dtype=torch.float64, device=device)  # [block, d]
    prepare_top_order(d, torch.float64, device)  # its one-time compile would skew the first block's rate and ETA
    progress = Progress("SFAL NDCG", d, "features", report)
    for start in range(0, d, block):
        rows = torch.arange(start, min(start + block, d), device=device)
        b = rows.shape[0]
        diagonal = (torch.arange(b, device=device), rows)
        p = snap(phi_rows(rows).to(torch.float64), in_place=True)
        s = snap(semantic_rows(rows).to(torch.float64), in_place=True)
        p[diagonal] = -torch.inf  # self-pairs rank below every real pair, so never in a top_n <= d - 1
        s[diagonal] = -torch.inf
        # all zero on entry: tied_ndcg resets what it wrote
        out[rows] = tied_ndcg(p, s, gains, discount, relevance_rows[:b])
        progress.advance(b)
    progress.finish()
    return out


def sfal_ndcg(counts: torch.Tensor, n_windows: int, embeddings: torch.Tensor, top_n: int = DEFAULT_TOP_N,
              block: int = 512, report: Callable[[str], None] | None = None) -> torch.Tensor:
    """SFAL from the scan's co-occurrence ``counts [d, d]`` and explanation ``embeddings [d, dim]`` (zero rows
    for features without an explanation): ``[d]`` float64 NDCG. Phi and cosine rows are built per block, so
    a 16k-feature SAE needs ``counts`` plus a few ``block x d`` matrices, never a ``d x d`` float matrix."""
    unit = unit_rows(embeddings.to(counts.device, torch.float64))  # [d, dim]
    d = counts.shape[0]
    # one buffer per similarity for every block: a fresh block x d matrix per block would be new memory each time,
    # which the OS maps and zeroes page by page (64 MiB twice per block at 16k features: ~1 s of a run on 2 cores)
    phi_buffer, cosine_buffer = (torch.empty((min(block, d), d), dtype=torch.float64, device=counts.device)
                                 for _ in range(2))

    def phi_block(rows: torch.Tensor) -> torch.Tensor:
        return phi_from_counts(counts, n_windows, rows, out=phi_buffer[: rows.shape[0]])

    def cosine_block(rows: torch.Tensor) -> torch.Tensor:
        return torch.mm(unit[rows], unit.T, out=cosine_buffer[: rows.shape[0]])

    return ndcg_by_rows(phi_block, cosine_block, d, counts.device, top_n=top_n, block=block, report=report)
