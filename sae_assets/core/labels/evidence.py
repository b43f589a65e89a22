"""Which windows a labeller sees, and which it is scored on, per feature (from ``activation_examples``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from sae_assets.core.labels.labelling import Window


@dataclass
class FeatureEvidence:
    feature: int
    shown: list[Window] = field(default_factory=list)
    """Top-activating windows given to the labeller."""
    positives: list[Window] = field(default_factory=list)
    """Held-out activating windows (never shown): lower-ranked top and quantile examples."""
    negatives: list[Window] = field(default_factory=list)
    """Random corpus windows where the feature does not fire."""
    extra: list[Window] = field(default_factory=list)
    """More evidence for the labeller, e.g. optimized prompts."""


EVIDENCE_COLUMNS = ("feature", "kind", "quantile", "rank", "activation", "tokens", "token_activations")
"""The ``activation_examples`` columns :func:`gather_evidence` reads (read only these: the others are large)."""


def gather_evidence(examples: pl.DataFrame, features: list[int], n_shown: int,
                    n_holdout: int) -> dict[int, FeatureEvidence]:
    """Split each feature's examples into shown / held-out positive / negative windows.

    Per feature, in the order top (by rank), quantile (by bin, rank), random (by rank): the first ``n_shown`` top
    windows are shown; later top and quantile windows where the feature is active are held-out positives (thinned
    to ``n_holdout`` spread over the list); random windows where it is silent are negatives. Roles are decided on
    the scalar columns first, so only the windows kept become Python objects."""
    kind_order = pl.col("kind").replace_strict({"top": 0, "quantile": 1, "random": 2}, return_dtype=pl.Int8)
    wanted = (examples.lazy().filter(pl.col("feature").is_in(features)).select(EVIDENCE_COLUMNS)
              .sort("feature", kind_order, pl.col("quantile").fill_null(0), "rank").collect())
    roles: dict[int, tuple[list[int], list[int], list[int]]] = {f: ([], [], []) for f in features}
    rows = zip(wanted["feature"].to_list(), wanted["kind"].to_list(), wanted["activation"].to_list(), strict=True)
    for row, (feature, kind, activation) in enumerate(rows):
        shown, positives, negatives = roles[feature]
        if kind == "top" and len(shown) < n_shown:
            shown.append(row)
        elif kind in ("top", "quantile") and activation > 0:
            positives.append(row)
        elif kind == "random" and activation <= 0:
            negatives.append(row)
    for _, positives, _ in roles.values():  # held-out positives spread over the activation range
        if len(positives) > n_holdout:
            step = len(positives) / max(n_holdout, 1)
            positives[:] = [positives[int(i * step)] for i in range(n_holdout)]
    kept = sorted(r for lists in roles.values() for part in lists for r in part)
    windows = wanted[kept].select("tokens", "token_activations")
    window = dict(zip(kept, (Window(tokens=t, activations=a) for t, a in windows.iter_rows()), strict=True))
    return {f: FeatureEvidence(feature=f, shown=[window[r] for r in shown], positives=[window[r] for r in positives],
                               negatives=[window[r] for r in negatives])
            for f, (shown, positives, negatives) in roles.items()}


def add_prompt_evidence(evidence: dict[int, FeatureEvidence], prompts: pl.DataFrame) -> int:
    """Append optimized prompts (``optimized_prompts`` rows: ``feature``, ``tokens``, ``position_activations``)
    to the labeller's extra evidence of the features in ``evidence``; returns how many were added. Prompts
    where the feature stays silent tell the labeller nothing and are left out."""
    added = 0
    for row in prompts.iter_rows(named=True):
        ev = evidence.get(row["feature"])
        if ev is not None and max(row["position_activations"], default=0.0) > 0:
            ev.extra.append(Window(tokens=row["tokens"], activations=row["position_activations"]))
            added += 1
    return added


def read_selection(feature_indices: list[int] | None, features_file: str | None) -> tuple[list[int] | None,
                                                                                         list[float] | None]:
    """The seed's two input forms: a list of indices, or a JSON file ``{"feature_indices": [...],
    "scores": [...]}`` (scores optional). ``(None, None)`` means every feature with examples."""
    if feature_indices is not None and features_file is not None:
        raise ValueError("Give feature_indices or features_file, not both.")
    if features_file is not None:
        try:
            data = json.loads(Path(features_file).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"Cannot read the feature selection file {features_file}: {err}") from err
        if not isinstance(data, dict) or not isinstance(data.get("feature_indices"), list):
            raise ValueError(f"{features_file} must hold {{\"feature_indices\": [...], \"scores\": [...]}}.")
        indices, scores = data["feature_indices"], data.get("scores")
        if scores is not None and len(scores) != len(indices):
            raise ValueError(f"{features_file}: {len(scores)} scores for {len(indices)} feature indices.")
    elif feature_indices is not None:
        indices, scores = feature_indices, None
    else:
        return None, None
    if not indices:
        raise ValueError("The feature selection is empty.")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ValueError("Feature indices must be integers.")
    return list(indices), (None if scores is None else [float(s) for s in scores])
