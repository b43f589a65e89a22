"""The ``optimized_prompts`` table: one row per target feature and method, and its summary per method."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from sae_assets.core.prompts.config import OptimizedPrompt

PROMPT_SCHEMA = pl.Schema({
    "feature": pl.Int32(), "method": pl.String(), "token_ids": pl.List(pl.Int64), "tokens": pl.List(pl.String),
    "text": pl.String(), "activation": pl.Float64(), "dataset_max_activation": pl.Float64(), "ratio": pl.Float64(),
    "cross_entropy": pl.Float64(), "steps": pl.Int32(), "stopped_early": pl.Boolean(),
    "trajectory": pl.List(pl.Float64), "position_activations": pl.List(pl.Float64), "seconds": pl.Float64(),
})


def prompts_frame(results: list[OptimizedPrompt], dataset_max: dict[int, float],
                  decode: Callable[[list[int]], str]) -> pl.DataFrame:
    """One row per result; ``ratio`` = activation / the feature's dataset maximum (null where that is 0 or
    unknown); ``text`` is ``decode`` of the prompt's token ids."""
    rows = []
    for r in results:
        top = dataset_max.get(r.feature)
        rows.append({
            "feature": r.feature, "method": r.method, "token_ids": r.token_ids,
            "tokens": r.token_strings or [str(t) for t in r.token_ids], "text": decode(r.token_ids),
            "activation": r.activation, "dataset_max_activation": top,
            "ratio": r.activation / top if top else None, "cross_entropy": r.cross_entropy, "steps": r.steps,
            "stopped_early": r.stopped_early, "trajectory": r.trajectory,
            "position_activations": r.position_activations, "seconds": r.seconds,
        })
    return pl.DataFrame(rows, schema=PROMPT_SCHEMA)


def method_summary(frame: pl.DataFrame) -> dict[str, dict[str, float | int]]:
    """Per method (in the frame's order): ``targets``, ``mean_activation``, ``reached_dataset_max`` (the fraction
    of targets with ratio ≥ 1, over those with a ratio), ``mean_ratio``, ``mean_cross_entropy`` and
    ``steps_per_second``."""
    by_method: dict[str, dict[str, float | int]] = {}
    for (method,), group in frame.group_by("method", maintain_order=True):
        ratio = group["ratio"].drop_nulls().to_numpy()
        activation, cross_entropy, steps_per_s = group.select(
            pl.col("activation").mean(), pl.col("cross_entropy").mean(),
            pl.col("steps").sum() / pl.col("seconds").sum()).row(0)
        by_method[str(method)] = {
            "targets": group.height, "mean_activation": round(float(activation), 4),
            "reached_dataset_max": round(float(np.mean(ratio >= 1)) if ratio.size else 0.0, 4),
            "mean_ratio": round(float(ratio.mean()) if ratio.size else 0.0, 4),
            "mean_cross_entropy": round(float(cross_entropy or 0.0), 3),
            "steps_per_second": round(float(steps_per_s), 2)}
    return by_method
