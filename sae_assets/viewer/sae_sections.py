"""The SAE page's sections from rows already read: plain numpy/polars, every value JSON-able (statuses as in
:mod:`sae_assets.viewer.sections`).

``evals_section`` and ``density_section`` take the partition's ``sae_evals`` row; ``label_quality`` the
``feature_labels`` columns; ``alignment_summary`` the ``alignment_scores`` rows; ``densest``, ``rarest`` and
``best_labelled`` rank features for links (ties on the tie grid, by lower feature).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from sae_assets.core.labels.choice import PRECEDENCE
from sae_assets.viewer.sections import TOP_N, labelled, ok, top_positions

EVAL_COLUMNS = ["hook_name", "d_sae", "corpus", "context_size", "n_contexts", "held_out_from_document", "n_tokens",
                "explained_variance", "mse", "cossim", "l2_norm_in", "l2_norm_out", "l2_ratio",
                "relative_reconstruction_bias", "l1", "l0", "l0_p10", "l0_p50", "l0_p90", "l0_max", "dead_fraction",
                "dense_fraction", "density_log10_edges", "density_histogram", "ce_loss_without_sae",
                "ce_loss_with_sae", "ce_loss_with_ablation", "ce_loss_score", "delta_lm_loss", "kl_div_with_sae",
                "kl_div_with_ablation", "kl_div_score", "verdict", "seconds"]
"""The ``sae_evals`` columns the page shows (``sae_assets.core.sae.eval_table.eval_row`` writes them)."""
DENSITY_LISTS = ("density_log10_edges", "density_histogram")
DENSE_LOG10 = -1.0
"""log10 of the density above which ``sae_evals`` calls a latent dense (10% of the tokens)."""
CANDIDATE_SCORES = {source: f"score_{source}" for source in PRECEDENCE}
LABEL_COLUMNS = ["label_source", "score", *CANDIDATE_SCORES.values()]


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def ce_loss_flag(score: Any, floor: float) -> str | None:
    """``negative`` (the model does worse with the SAE spliced in than with its hook zeroed), ``low`` (below
    ``floor``: the ``sae_evals`` check's, ``SAE_ASSETS_MIN_CE_LOSS_SCORE``), else ``ok``; None for no number."""
    number = _number(score)
    if number is None:
        return None
    return "negative" if number < 0 else "low" if number < floor else "ok"


def evals_section(row: Mapping[str, Any], floor: float) -> dict[str, Any]:
    """The eval card: every scalar column of the row, the CE loss score's flag and the floor it is flagged at."""
    scalars = {k: v for k, v in row.items() if k not in DENSITY_LISTS}
    return ok(**scalars, ce_loss_flag=ce_loss_flag(row.get("ce_loss_score"), floor), low_ce_loss_score=floor)


def density_section(row: Mapping[str, Any]) -> dict[str, Any]:
    """The histogram of live latents by log10 density on the held-out tokens; dead latents are counted apart."""
    edges = [float(e) for e in row.get("density_log10_edges") or []]
    counts = [int(c) for c in row.get("density_histogram") or []]
    if not counts or len(edges) != len(counts) + 1:
        return {"status": "error", "message": f"sae_evals holds {len(edges)} density bin edges for {len(counts)} "
                "bins: the histogram cannot be drawn"}
    d_sae, dead = _number(row.get("d_sae")), _number(row.get("dead_fraction"))
    n_dead = round(d_sae * dead) if d_sae is not None and dead is not None else None
    return ok(edges=edges, counts=counts, n_live=sum(counts), n_dead=n_dead, dense_log10=DENSE_LOG10)


def _mean(values: pl.Series) -> dict[str, Any]:
    """Mean and count of the finite values."""
    finite = values.cast(pl.Float64).drop_nulls().drop_nans()
    return {"mean": finite.mean() if finite.len() else None, "n_scored": finite.len()}


def label_quality(frame: pl.DataFrame) -> dict[str, Any]:
    """From ``feature_labels`` (``label_source``, ``score``, ``score_<source>``): how many features each source's
    candidate won (``none``: no candidate at all), the mean shown-label score, each winner's mean score, and each
    candidate's mean score over the features where it was scored (the detection score: 0.5 is chance)."""
    frame = frame.with_columns(pl.col("label_source").cast(pl.String), pl.col("score").cast(pl.Float64))
    sources = []
    for source in PRECEDENCE:
        won = frame.filter(pl.col("label_source") == source)
        column = CANDIDATE_SCORES[source]
        candidate = _mean(frame[column]) if column in frame.columns else {"mean": None, "n_scored": 0}
        sources.append({"source": source, "wins": won.height, "mean_score": _mean(won["score"])["mean"],
                        "candidate_mean_score": candidate["mean"], "candidate_scored": candidate["n_scored"]})
    shown = _mean(frame["score"])
    return ok(n_rows=frame.height, sources=sources, unlabelled=int(frame["label_source"].is_null().sum()),
              mean_score=shown["mean"], n_scored=shown["n_scored"])


def alignment_summary(frame: pl.DataFrame) -> dict[str, Any]:
    """SFAL NDCG per embedding model (by name): mean and median over the features with an explanation (the others
    have no embedding), their count, and the mean over every feature as the asset's metadata gives it."""
    models = []
    for (name,), group in sorted(frame.group_by("embedding_model"), key=lambda g: str(g[0][0])):
        ndcg = group["ndcg"].cast(pl.Float64)
        explained = ndcg.filter(group["has_explanation"].fill_null(False).cast(pl.Boolean))
        models.append({"embedding_model": str(name), "n_features": group.height, "n_explained": explained.len(),
                       "mean_ndcg": explained.mean() if explained.len() else None,
                       "median_ndcg": explained.median() if explained.len() else None,
                       "mean_ndcg_all": ndcg.mean() if group.height else None})
    return ok(models=models, over="features with an explanation")


def _ranked(frame: pl.DataFrame, column: str, sign: float, labels: Mapping[int, str],
            n: int) -> list[dict[str, Any]]:
    """The ``n`` rows of ``frame`` (sorted by feature) with the largest ``sign * column``, with their labels."""
    values = frame[column].cast(pl.Float64).to_numpy()
    top = top_positions(sign * values, n)
    features = frame["feature"].to_numpy().astype(np.int64)[top]
    return labelled(features.tolist(), labels, **{column: values[top].tolist()})


def _finite(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    return (frame.with_columns(pl.col("feature").cast(pl.Int64), pl.col(column).cast(pl.Float64))
            .filter(pl.col(column).is_finite()).sort("feature"))


def densest(stats: pl.DataFrame, labels: Mapping[int, str], n: int = TOP_N) -> dict[str, Any]:
    """The ``n`` features of ``feature_stats`` active on the most tokens."""
    return ok(features=_ranked(_finite(stats, "density"), "density", 1.0, labels, n))


def rarest(stats: pl.DataFrame, labels: Mapping[int, str], n: int = TOP_N) -> dict[str, Any]:
    """The ``n`` live features (density > 0) of ``feature_stats`` active on the fewest tokens."""
    live = _finite(stats, "density").filter(pl.col("density") > 0)
    return ok(features=_ranked(live, "density", -1.0, labels, n), n_dead=stats.height - live.height)


def best_labelled(labels_frame: pl.DataFrame, labels: Mapping[int, str], n: int = TOP_N) -> dict[str, Any]:
    """The ``n`` features whose shown label scores highest (``feature_labels.score``), with its source."""
    scored = _finite(labels_frame, "score")
    rows = _ranked(scored, "score", 1.0, labels, n)
    source = dict(zip(scored["feature"].to_list(), scored["label_source"].to_list(), strict=True))
    return ok(features=[{**r, "label_source": source.get(r["feature"])} for r in rows])
