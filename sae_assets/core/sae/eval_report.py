"""Across the SAEs of one model: the ``sae_evals`` rows of every layer as the report's table, each flagged when
its CE loss score is below the floor."""

from __future__ import annotations

import polars as pl

REPORT_COLUMNS = ("layer", "hook_name", "d_sae", "n_tokens", "l0", "explained_variance", "cossim", "l2_ratio",
                  "dead_fraction", "dense_fraction", "ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_score",
                  "delta_lm_loss", "kl_div_score")


def layer_report(evals: pl.DataFrame, floor: float) -> pl.DataFrame:
    """``sae_evals`` rows of one model -> one row per layer (ordered by layer) with ``below_floor``."""
    return (evals.select(REPORT_COLUMNS)
            .with_columns((pl.col("ce_loss_score") < floor).alias("below_floor"),
                          pl.col("layer").cast(pl.Int32).alias("layer_index"))
            .sort("layer_index").drop("layer_index"))


def below_floor_text(report: pl.DataFrame, floor: float) -> str | None:
    """A sentence naming the layers whose CE loss score is below ``floor``, or None when there are none."""
    bad = report.filter(pl.col("below_floor"))
    if bad.is_empty():
        return None
    layers = ", ".join(f"layer {r['layer']} ({r['ce_loss_score']:.3f})" for r in bad.iter_rows(named=True))
    return (f"CE loss score below the floor {floor}: {layers}. Spliced in, such an SAE keeps little of the model's "
            "loss, or does worse than zeroing the hook (a negative score): check the catalog's hook and layer for "
            "it, and whether it was trained.")
