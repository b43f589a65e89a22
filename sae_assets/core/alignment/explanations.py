"""Neuronpedia explanation records -> one explanation per feature, by a documented rule.

Neuronpedia's exports hold every explanation ever made for a feature (several explainer models and
methods, re-runs). One is kept per feature:

1. the explanation type earliest in ``preferred_types`` (unlisted types after all listed ones), then
2. the explainer model earliest in ``preferred_models`` (likewise), then
3. the newest (``createdAt``, ISO-8601; missing sorts oldest), then the one read last.

``n_alternatives`` counts the other explanations the feature had.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

EXPLANATION_COLUMNS = ["feature", "description", "explanation_type", "explainer_model", "source", "n_alternatives"]


class MalformedRecord(ValueError):
    """An export record without a usable index or description."""


def normalize(record: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        index = int(str(record["index"]).strip())
    except (KeyError, ValueError) as err:
        raise MalformedRecord(f"{where}: record without an integer 'index': {str(record)[:200]}") from err
    description = record.get("description")
    if not isinstance(description, str):
        raise MalformedRecord(f"{where}: record for index {index} has no text 'description'")
    return {"feature": index, "description": description.strip(), "explanation_type": record.get("typeName"),
            "explainer_model": record.get("explanationModelName"), "created_at": record.get("createdAt") or ""}


def choose_explanations(records: Iterable[dict[str, Any]], source: str, preferred_types: Sequence[str] = (),
                        preferred_models: Sequence[str] = ()) -> pl.DataFrame:
    """Normalized records -> one row per feature (``EXPLANATION_COLUMNS``), sorted by feature."""
    frame = pl.DataFrame(list(records), schema={"feature": pl.Int64, "description": pl.String,
                                                "explanation_type": pl.String, "explainer_model": pl.String,
                                                "created_at": pl.String})
    type_rank = {t: i for i, t in enumerate(preferred_types)}
    model_rank = {m: i for i, m in enumerate(preferred_models)}
    ranked = frame.with_row_index("read_order").with_columns(
        pl.col("explanation_type").replace_strict(type_rank, default=len(type_rank), return_dtype=pl.Int32)
        .alias("type_rank"),
        pl.col("explainer_model").replace_strict(model_rank, default=len(model_rank), return_dtype=pl.Int32)
        .alias("model_rank"),
    )
    best = (ranked.sort(["feature", "type_rank", "model_rank", "created_at", "read_order"],
                        descending=[False, False, False, True, True])
            .group_by("feature", maintain_order=True)
            .agg(pl.all().first(), pl.len().alias("n")))
    return best.select(
        pl.col("feature").cast(pl.Int32), "description", "explanation_type", "explainer_model",
        pl.lit(source).alias("source"), (pl.col("n") - 1).cast(pl.Int32).alias("n_alternatives"),
    ).sort("feature")
