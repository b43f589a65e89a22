"""The ``feature_labels`` table and its two export files, from a labelling run (:class:`BlockedLabels`).

- :func:`select_features`: which features to label (given, else every feature with top examples), checked
  against the SAE's width.
- :func:`label_frame`: one row per feature, :data:`LABEL_SCHEMA`; its ``error`` column says why a feature has no
  label (:func:`label_error`).
- :func:`example_lines` / :func:`labels_json`: the seed's ``feature_examples.jsonl`` and ``feature_labels.json``.
- :func:`source_summary`: how often each candidate source won, and its mean score.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import polars as pl

from sae_assets.core.labels.blocks import BlockedLabels
from sae_assets.core.labels.choice import PRECEDENCE
from sae_assets.core.labels.evidence import FeatureEvidence

SCORE_METHOD = "embedding-auroc"
LABEL_SCHEMA = {
    "feature": pl.Int32, "label": pl.String, "label_source": pl.String, "score": pl.Float64,
    "label_llm": pl.String, "score_llm": pl.Float64, "label_keywords": pl.String, "score_keywords": pl.Float64,
    "label_explanation": pl.String, "score_explanation": pl.Float64, "score_method": pl.String,
    "score_llm_detection": pl.Float64, "n_examples": pl.Int32, "labeller_model": pl.String,
    "selection_score": pl.Float64, "error": pl.String,
}
"""Explicit: a column that is all null in one partition keeps its type."""


def select_features(indices: list[int] | None, examples: pl.DataFrame, d_sae: int,
                    max_features: int | None) -> list[int]:
    """``indices`` (None: every feature with a ``top`` example, ascending), at most ``max_features`` of them.
    Raises ValueError naming the indices outside ``[0, d_sae)``."""
    if indices is None:
        indices = sorted(examples.filter(pl.col("kind") == "top")["feature"].unique().to_list())
    bad = [i for i in indices if not 0 <= i < d_sae]
    if bad:
        more = " ..." if len(bad) > 10 else ""
        raise ValueError(f"Feature indices outside the SAE (d_sae={d_sae}): {bad[:10]}{more}")
    return indices[:max_features] if max_features is not None else indices


def label_error(run: BlockedLabels, feature: int) -> str | None:
    """Why ``feature`` has no label, or the LLM's error for it (None: nothing went wrong)."""
    if not run.n_shown[feature]:
        return "no activating examples"
    llm_error = run.llm.get(feature, (None, None))[1]
    if run.choices[feature].label is None and llm_error is None:
        return ("no label: not sent to the LLM (use_llm / llm_max_features) and no activating token has a "
                "letter or digit for a keyword label")
    return llm_error


def label_frame(indices: list[int], run: BlockedLabels, labeller_model: str | None,
                selection_scores: list[float] | None) -> pl.DataFrame:
    """The ``feature_labels`` rows of ``indices``, in order (:data:`LABEL_SCHEMA`)."""
    llm, choices, explained = run.llm, run.choices, run.explanations
    return pl.DataFrame({
        "feature": indices,
        "label": [choices[f].label for f in indices],
        "label_source": [choices[f].source for f in indices],  # the rule: core/labels/choice.py
        "score": [choices[f].score for f in indices],
        "label_llm": [llm.get(f, (None, None))[0] for f in indices],
        "score_llm": [run.llm_scores.get(f) for f in indices],
        "label_keywords": [run.keywords[f] or None for f in indices],
        "score_keywords": [run.keyword_scores.get(f) for f in indices],
        "label_explanation": [explained.get(f, (None, None))[0] for f in indices],
        "score_explanation": [explained.get(f, (None, None))[1] for f in indices],
        "score_method": [SCORE_METHOD if choices[f].score is not None else None for f in indices],
        "score_llm_detection": [run.detection.get(f) for f in indices],
        "n_examples": [run.n_shown[f] for f in indices],
        "labeller_model": [labeller_model] * len(indices),
        "selection_score": selection_scores[: len(indices)] if selection_scores else [None] * len(indices),
        "error": [label_error(run, f) for f in indices],
    }, schema=LABEL_SCHEMA)


def example_lines(features: list[int], evidence: dict[int, FeatureEvidence]) -> Iterator[str]:
    """The seed's ``feature_examples.jsonl`` lines (newline-terminated): each feature's shown windows."""
    for f in features:
        yield json.dumps({"feature_index": f, "examples": [
            {"text": w.text(), "tokens": list(w.tokens), "activations": list(w.activations),
             "max_activation": max(w.activations, default=0.0)} for w in evidence[f].shown]}) + "\n"


def labels_json(frame: pl.DataFrame) -> str:
    """The seed's ``feature_labels.json``: one object per row of ``frame`` (a :func:`label_frame`)."""
    return json.dumps(
        [{"feature_index": r["feature"], "llm_label": r["label_llm"], "search_label": r["label_keywords"],
          "explanation": r["label_explanation"], "label": r["label"], "label_source": r["label_source"],
          "score": r["score"], "score_llm": r["score_llm"], "score_keywords": r["score_keywords"],
          "score_explanation": r["score_explanation"], "error": r["error"]} for r in frame.iter_rows(named=True)],
        indent=1)


def source_summary(frame: pl.DataFrame) -> dict[str, float | int]:
    """``wins_<source>``: how often each candidate source won; ``mean_score_<source>``: its mean score over the
    features it has a score for (NaN: none)."""
    out: dict[str, float | int] = {}
    for source in PRECEDENCE:
        out[f"wins_{source}"] = int((frame["label_source"] == source).sum())
        mean = frame[f"score_{source}"].drop_nulls().drop_nans().mean()
        out[f"mean_score_{source}"] = float("nan") if mean is None else float(mean)  # type: ignore[arg-type]
    return out
