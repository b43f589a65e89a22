"""The ``sae_evals`` row of one SAE, and what its numbers say about it in a sentence."""

from __future__ import annotations

import polars as pl

from sae_assets.core.sae.evals import DENSITY_EDGES, SaeEvals

WORSE_THAN_ABLATION = 0.0
"""A CE loss score below this: the model does worse with the SAE than with its hook zeroed."""
POOR_SCORE = 0.5
"""A CE loss score below this keeps less than half of what the hook's information is worth to the loss."""


def verdict(evals: SaeEvals) -> str:
    """One sentence a reader can act on: how much of the model's loss the SAE keeps, and what a bad score means."""
    score = evals.ce_loss_score
    kept = (f"CE loss score {score:.3f} (delta LM loss {evals.delta_lm_loss:+.3f} nats/token, explained variance "
            f"{evals.explained_variance:.3f}, L0 {evals.l0:.1f})")
    if score < WORSE_THAN_ABLATION:
        return (f"{kept}: the model does worse with this SAE spliced in than with the hook zeroed. The SAE is "
                "broken or mismatched (another model, hook or layer, or untrained weights).")
    if evals.explained_variance < 0:
        return (f"{kept}: it reconstructs the activations worse than their mean would, so what it keeps of the "
                "loss comes from its bias, not its latents: untrained weights, or an SAE of another model or hook.")
    if score < POOR_SCORE:
        return (f"{kept}: it keeps less than half of the loss that zeroing the hook costs; trained SAEs keep 0.8 "
                "or more (Gemma Scope's).")
    if evals.dead_fraction > 0.5:
        return f"{kept}; {100 * evals.dead_fraction:.0f}% of its latents never fired on the held-out tokens."
    return kept + "."


def eval_row(evals: SaeEvals, hook_name: str, d_sae: int, context_size: int, n_contexts: int, corpus: str,
             held_out_from: int, seconds: float) -> pl.DataFrame:
    """One row: where the tokens came from, every scalar metric, the density histogram and the verdict."""
    return pl.DataFrame({
        "hook_name": [hook_name], "d_sae": [d_sae], "corpus": [corpus], "context_size": [context_size],
        "n_contexts": [n_contexts], "held_out_from_document": [held_out_from],
        **{name: [value] for name, value in evals.scalars().items()},
        "density_log10_edges": [list(DENSITY_EDGES)],
        "density_histogram": [evals.density_histogram],
        "verdict": [verdict(evals)], "seconds": [seconds],
    }, schema_overrides={"density_log10_edges": pl.List(pl.Float64), "density_histogram": pl.List(pl.Int64)})
