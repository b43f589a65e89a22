"""The feature page's sections from rows already read: plain numpy/polars, every value JSON-able.

A section is ``{"status": "ok", ...}``; ``{"status": "missing", "asset": ..., "message": ...}`` when its table or
partition does not exist (materialize that asset); ``{"status": "none", "message": ...}`` when the table has no
row for the feature. Numbers that are not finite become ``null`` (JSON has no NaN); floats keep 7 significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from sae_assets.core.common.ranking import top_order
from sae_assets.core.common.similarity import phi_rows, phi_scale
from sae_assets.core.common.ties import snap
from sae_assets.viewer.lake_tables import asset_of

HISTOGRAM_BINS = 20
TOP_N = 10
SIGNIFICANT = 7
EXAMPLE_KINDS = ("top", "quantile", "random")


def missing(table: str, model: str, layer: int | str) -> dict[str, Any]:
    asset = asset_of(table)
    return {"status": "missing", "asset": asset, "table": table,
            "message": f"materialize {asset} for {model} layer {layer}"}


def none(table: str, feature: int) -> dict[str, Any]:
    return {"status": "none", "table": table, "message": f"{table} has no row for feature {feature}"}


def ok(**data: Any) -> dict[str, Any]:
    return {"status": "ok", **data}


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays as Python values, recursively; floats rounded to
    :data:`SIGNIFICANT` digits (most columns are float32: no digits past its precision), None when not finite."""
    if isinstance(value, float | np.floating):
        number = float(value)
        return float(f"{number:.{SIGNIFICANT}g}") if math.isfinite(number) else None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [jsonable(v) for v in value]
    return value


def labelled(features: Sequence[int], labels: Mapping[int, str], **columns: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows ``{"feature", <columns>..., "label"}`` (the label null where the feature has none)."""
    return [{"feature": int(f), **{name: values[i] for name, values in columns.items()}, "label": labels.get(int(f))}
            for i, f in enumerate(features)]


def top_positions(scores: np.ndarray, n: int = TOP_N) -> np.ndarray:
    """Positions of the ``n`` largest of ``scores [m]`` (all m when fewer), largest first, compared on the tie grid
    (:func:`~sae_assets.core.common.ties.snap`: values on one point of 2^-30 are ties, so rounding noise orders
    nothing), ties by lower position (callers keep positions in feature order, so ties go to the lower feature)."""
    return top_order(snap(np.asarray(scores, dtype=np.float64))[None, :], min(n, len(scores)))[0]


def float64_products(matrix: np.ndarray, vector: np.ndarray, rows: int = 4096) -> np.ndarray:
    """``matrix [m, dim] @ vector [dim]`` in float64, ``rows`` rows of ``matrix`` converted at a time: products of
    float32 values are exact in float64, so rows equal in float32 get similarities that differ by float64 rounding
    only (~1e-16), which the tie grid absorbs (float32 products differ by ~1e-7)."""
    right = np.asarray(vector, dtype=np.float64)
    out = np.empty(len(matrix), dtype=np.float64)
    for start in range(0, len(matrix), rows):
        out[start : start + rows] = matrix[start : start + rows].astype(np.float64) @ right
    return out


def examples_section(rows: pl.DataFrame) -> dict[str, Any]:
    """The feature's example windows: ``top`` by rank, ``quantiles`` as bins (highest bin first, each by rank),
    ``random`` by draw; each with its tokens, per-token activations, peak index in the window and position."""
    rows = rows.with_columns((pl.col("token_position") - pl.col("window_start")).alias("peak"))
    keep = ["rank", "activation", "doc_index", "token_position", "window_start", "peak", "tokens",
            "token_activations"]

    def of(kind: str, by: list[str], descending: list[bool]) -> pl.DataFrame:
        return rows.filter(pl.col("kind") == kind).sort(by, descending=descending)

    quantiles = of("quantile", ["quantile", "rank"], [True, False])
    bins = [{"quantile": int(q[0]), "examples": group.select(keep).to_dicts()}
            for q, group in quantiles.group_by("quantile", maintain_order=True)]
    counts = {kind: int((rows["kind"] == kind).sum()) for kind in EXAMPLE_KINDS}
    return ok(counts=counts, top=of("top", ["rank"], [False]).select(keep).to_dicts(), quantiles=bins,
              random=of("random", ["rank"], [False]).select(keep).to_dicts())


def histogram_section(rows: pl.DataFrame, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Histogram of the feature's non-zero activations over the tokens of its example windows, each token (document,
    position) counted once although windows overlap; equal-width bins from 0 to the largest value."""
    if rows.is_empty():
        return {"status": "none", "message": "no activation examples for this feature",
                "source": "activation examples"}
    tokens = (rows.select("doc_index", "window_start", "token_activations")
              .with_columns(pl.int_ranges(pl.col("token_activations").list.len()).alias("offset"))
              .explode("token_activations", "offset")
              .filter(pl.col("token_activations") > 0)
              .select("doc_index", (pl.col("window_start") + pl.col("offset")).alias("position"),
                      pl.col("token_activations").alias("value"))
              .unique(["doc_index", "position"]))
    values = tokens["value"].cast(pl.Float64).to_numpy()
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"status": "none", "message": "the feature's example windows have no non-zero activation",
                "source": "activation examples"}
    counts, edges = np.histogram(values, bins=bins, range=(0.0, float(values.max())))
    return ok(source="activation examples", counts=counts.tolist(), edges=edges.tolist(), n_values=len(values),
              note="non-zero activations of the tokens in the feature's example windows (top, quantile and "
                   "random), each token once: a sample weighted towards strong activations, not the corpus")


def cooccurring_section(row: Mapping[str, Any], marginals: np.ndarray, labels: Mapping[int, str],
                        n: int = TOP_N) -> dict[str, Any]:
    """The ``n`` partners with the largest Phi (:func:`~sae_assets.core.common.similarity.phi_rows`, SFAL's
    formula: 0 where undefined) among those sharing a window with the feature:
    ``(N c_ij - c_i c_j) / sqrt(c_i (N - c_i) c_j (N - c_j))``."""
    partners = np.asarray(row["partners"] or [], dtype=np.int64)
    counts = np.asarray(row["counts"] or [], dtype=np.float64)
    total, c_i = int(row["n_windows"]), np.array([float(row["marginal"])])
    inside = partners < len(marginals)
    by_feature = np.argsort(partners[inside], kind="stable")  # the scan writes them ascending already
    partners, counts = partners[inside][by_feature], counts[inside][by_feature]
    c_j = marginals[partners].astype(np.float64)
    phi = phi_rows(counts[None, :].copy(), total, c_i, c_j, phi_scale(c_i, total), phi_scale(c_j, total))[0]
    top = top_positions(phi, n)
    return ok(n_windows=total, marginal=int(c_i[0]), n_partners=len(partners),
              partners=labelled(partners[top].tolist(), labels, phi=phi[top].tolist(), count=counts[top].astype(
                  np.int64).tolist(), marginal=c_j[top].astype(np.int64).tolist()))


def cosine_neighbours(matrix: np.ndarray, features: np.ndarray, position: int, labels: Mapping[int, str],
                      n: int = TOP_N) -> list[dict[str, Any]]:
    """The ``n`` rows of the unit-row ``matrix`` (rows in ``features`` order, ascending) most similar to row
    ``position`` (itself excluded; rows whose similarity is not a number neither): similarities in float64
    (:func:`float64_products`), ties on the grid by lower feature (:func:`top_positions`)."""
    sims = float64_products(matrix, matrix[position])
    sims[position] = -np.inf
    sims[np.isnan(sims)] = -np.inf
    top = top_positions(sims, n)
    top = top[np.isfinite(sims[top])]
    return labelled(features[top].tolist(), labels, similarity=sims[top].tolist())


def first_row(frame: pl.DataFrame) -> dict[str, Any] | None:
    return frame.row(0, named=True) if frame.height else None
