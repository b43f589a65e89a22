"""Everything the lake knows about one feature, read from the Delta tables on demand: the feature page's data.

:meth:`FeatureReader.page` returns JSON-able sections (see :mod:`sae_assets.viewer.sections` for their statuses):
``labels`` (feature_labels + explanations), ``stats`` (feature_stats), ``examples`` and ``histogram``
(activation_examples), ``logit_effects``, ``decoder_neighbours`` (feature_map_edges), ``cooccurring``
(cooccurrence: top Phi partners), ``semantic_neighbours`` (explanation_embeddings: cosine), ``alignment``
(alignment_scores), ``cluster`` (feature_clusters) and ``optimized_prompts``. Only the feature's rows are read
(filters and projections pushed into the parquet scans); what needs a whole partition column (the marginals, the
embedding matrix, the labels that name neighbours) is built once per table version and cached.
:meth:`FeatureReader.search` finds features by label or explanation text. Plain polars/numpy: no Dagster.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from sae_assets.core.common.list_columns import list_matrix
from sae_assets.core.common.similarity import unit_rows
from sae_assets.core.labels.choice import shown_label
from sae_assets.viewer import sections as s
from sae_assets.viewer.lake_tables import LakeTables, Partition

log = logging.getLogger(__name__)
PAGE = "feature page"


def guarded_section(page: str, name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One section of ``page``; a table that cannot be read fails its section only (logged), never the page."""
    try:
        return build()
    except Exception as err:  # a corrupt or foreign table: say so in its section
        log.exception("%s section %s failed", page, name)
        return {"status": "error", "message": f"{type(err).__name__}: {err}"}

TABLES = ("sae_decoder", "feature_stats", "feature_labels", "explanations", "activation_examples", "logit_effects",
          "feature_map_edges", "cooccurrence", "explanation_embeddings", "alignment_scores", "feature_clusters",
          "optimized_prompts")
LABEL_COLUMNS = ["label", "label_source", "score", "label_llm", "score_llm", "label_keywords", "score_keywords",
                 "label_explanation", "score_explanation", "error"]
TEXT_COLUMNS = ("description", "label", "label_llm", "label_keywords", "label_explanation")
"""What search matches: the explanation and every label candidate."""
EXPLANATION_COLUMNS = ["description", "explanation_type", "explainer_model", "source"]
STATS_COLUMNS = ["density", "max_activation", "mean_activation", "activation_entropy", "n_docs_active",
                 "n_tokens_active"]
EXAMPLE_COLUMNS = ["kind", "rank", "quantile", "activation", "doc_index", "token_position", "window_start",
                   "tokens", "token_activations"]
LOGIT_COLUMNS = ["promoted_ids", "promoted_tokens", "promoted_values", "suppressed_ids", "suppressed_tokens",
                 "suppressed_values"]
PROMPT_COLUMNS = ["method", "tokens", "text", "activation", "dataset_max_activation", "ratio", "cross_entropy"]
SECTIONS = ("labels", "stats", "examples", "histogram", "logit_effects", "decoder_neighbours", "cooccurring",
            "semantic_neighbours", "alignment", "cluster", "optimized_prompts")
SEARCH_LIMIT = 20


class NotFound(LookupError):
    """The partition has no table at all, or the feature is outside the SAE (the API answers 404)."""


@dataclass(frozen=True)
class LabelIndex:
    """A partition's shown labels (``shown_label``: feature_labels.label, else the explanation) and the lowercased
    text of every label candidate and explanation, for neighbour names and search."""

    labels: dict[int, str]
    text: pl.DataFrame
    """``feature``, ``text``: one row per feature with any label, sorted by feature."""


class FeatureReader:
    """Reads feature pages from the lake at ``lake_root`` (a path or a deltalake URI)."""

    def __init__(self, lake_root: str, storage_options: dict[str, str] | None = None, cache_size: int = 32) -> None:
        self.tables = LakeTables(lake_root, storage_options, cache_size)

    def partitions(self, model: str, layer: int, tables: tuple[str, ...] = TABLES) -> dict[str, Partition | None]:
        """Partition (model, layer) of each of ``tables`` (None where absent); NotFound when none has it."""
        parts = {t: self.tables.partition(t, model, layer) for t in tables}
        if not any(parts.values()):
            raise NotFound(f"no table of the lake {self.tables.root} has {model} layer {layer}: materialize its "
                           "assets first")
        return parts

    def page(self, model: str, layer: int, feature: int) -> dict[str, Any]:
        """The feature's page: ``{"model", "layer", "feature", "label", "n_features", "sections": {...}}``."""
        parts = self.partitions(model, layer)
        n_features = self.n_features(parts)
        if feature < 0 or (n_features is not None and feature >= n_features):
            raise NotFound(f"feature {feature} is out of range: {model} layer {layer} has {n_features} features")
        labels = self.label_index(parts)
        builders: dict[str, Callable[[], dict[str, Any]]] = {
            "labels": lambda: self._labels_section(parts, feature),
            "stats": lambda: self._one_row(parts, "feature_stats", feature, STATS_COLUMNS),
            "logit_effects": lambda: self._logit_effects(parts, feature),
            "decoder_neighbours": lambda: self._decoder_neighbours(parts, feature, labels.labels),
            "cooccurring": lambda: self._cooccurring(parts, feature, labels.labels),
            "semantic_neighbours": lambda: self._semantic_neighbours(parts, feature, labels.labels),
            "alignment": lambda: self._alignment(parts, feature),
            "cluster": lambda: self._one_row(parts, "feature_clusters", feature, ["kept", "cluster", "selected"]),
            "optimized_prompts": lambda: self._optimized_prompts(parts, feature),
        }
        sections = {name: guarded_section(PAGE, name, build) for name, build in builders.items()}
        examples = guarded_section(PAGE, "examples", lambda: self._examples(parts, feature))
        histogram = examples.pop("_histogram", None)  # one read serves both
        sections["examples"] = examples
        sections["histogram"] = histogram or {**examples, "source": "activation examples"}
        sections = {name: sections[name] for name in SECTIONS}
        page = {"model": model, "layer": layer, "feature": feature, "label": labels.labels.get(feature),
                "n_features": n_features, "sections": sections}
        return s.jsonable(page)

    def search(self, model: str, layer: int, query: str, limit: int = SEARCH_LIMIT) -> dict[str, Any]:
        """Features whose labels or explanation contain ``query`` (case-insensitive), the first ``limit`` by index;
        a ``query`` that is an integer names that feature."""
        parts = self.partitions(model, layer)
        labels = self.label_index(parts)
        text = query.strip()
        if re.fullmatch(r"[0-9]{1,9}", text):
            feature, n_features = int(text), self.n_features(parts)
            found = [] if n_features is not None and feature >= n_features else [feature]
            total = len(found)
        else:
            hits = labels.text.filter(pl.col("text").str.contains(text.lower(), literal=True)) if text else \
                labels.text.clear()
            found, total = hits["feature"].head(limit).to_list(), hits.height
        results = [{"feature": f, "label": labels.labels.get(f)} for f in found]
        return s.jsonable({"model": model, "layer": layer, "q": query, "total": total, "results": results,
                           "truncated": total > len(results)})

    # --- per-section reads -------------------------------------------------------------------------------------

    def _one_row(self, parts: dict[str, Partition | None], table: str, feature: int,
                 columns: list[str]) -> dict[str, Any]:
        part = parts[table]
        if part is None:
            return s.missing(table, *_where(parts))
        row = s.first_row(part.rows(columns, pl.col("feature") == feature))
        return s.none(table, feature) if row is None else s.ok(**row)

    def _labels_section(self, parts: dict[str, Partition | None], feature: int) -> dict[str, Any]:
        section = self._one_row(parts, "feature_labels", feature, LABEL_COLUMNS)
        part = parts["explanations"]
        if part is None:
            section["explanations"] = s.missing("explanations", *_where(parts))
        else:
            rows = part.rows(EXPLANATION_COLUMNS, pl.col("feature") == feature)
            section["explanations"] = s.ok(rows=rows.to_dicts()) if rows.height else s.none("explanations", feature)
        return section

    def _examples(self, parts: dict[str, Partition | None], feature: int) -> dict[str, Any]:
        """The examples section, carrying the histogram section under ``_histogram`` (one read for both)."""
        part = parts["activation_examples"]
        if part is None:
            gone = s.missing("activation_examples", *_where(parts))
            return {**gone, "_histogram": {**gone, "source": "activation examples"}}
        # DataFusion decodes only the matching rows of the list columns; the scan writes the table grouped by
        # feature, so those rows sit in few pages (tables written before that are read alike, only slower).
        rows = self.tables.query(part, EXAMPLE_COLUMNS, f"feature = {int(feature)}")
        if rows.is_empty():
            gone = s.none("activation_examples", feature)
            return {**gone, "_histogram": {**gone, "source": "activation examples"}}
        return {**s.examples_section(rows), "_histogram": s.histogram_section(rows)}

    def _logit_effects(self, parts: dict[str, Partition | None], feature: int) -> dict[str, Any]:
        section = self._one_row(parts, "logit_effects", feature, LOGIT_COLUMNS)
        if section["status"] != "ok":
            return section

        def tokens(kind: str) -> list[dict[str, Any]]:
            ids, strings, values = (section.pop(f"{kind}_{c}") or [] for c in ("ids", "tokens", "values"))
            return [{"token": t, "id": i, "value": v} for i, t, v in zip(ids, strings, values, strict=False)]

        return s.ok(promoted=tokens("promoted"), suppressed=tokens("suppressed"))

    def _decoder_neighbours(self, parts: dict[str, Partition | None], feature: int,
                            labels: dict[int, str]) -> dict[str, Any]:
        part = parts["feature_map_edges"]
        if part is None:
            return s.missing("feature_map_edges", *_where(parts))
        rows = part.rows(["target", "similarity"], pl.col("source") == feature).sort(
            ["similarity", "target"], descending=[True, False])
        if rows.is_empty():
            return s.none("feature_map_edges", feature)
        return s.ok(neighbours=s.labelled(rows["target"].to_list(), labels, similarity=rows["similarity"].to_list()))

    def _cooccurring(self, parts: dict[str, Partition | None], feature: int, labels: dict[int, str]) -> dict[str, Any]:
        part = parts["cooccurrence"]
        if part is None:
            return s.missing("cooccurrence", *_where(parts))
        row = s.first_row(part.rows(["marginal", "partners", "counts", "n_windows"], pl.col("feature") == feature))
        if row is None:
            return s.none("cooccurrence", feature)
        marginals = self.tables.cached(("marginals", part.model, part.layer, part.version), lambda: _by_feature(
            part.scan().select("feature", "marginal").collect(), "marginal"))
        return s.cooccurring_section(row, marginals, labels)

    def _semantic_neighbours(self, parts: dict[str, Partition | None], feature: int,
                             labels: dict[int, str]) -> dict[str, Any]:
        part = parts["explanation_embeddings"]
        if part is None:
            return s.missing("explanation_embeddings", *_where(parts))
        matrices = self.tables.cached(("embeddings", part.model, part.layer, part.version),
                                      lambda: _embedding_matrices(part))
        if not matrices:
            return s.none("explanation_embeddings", feature)
        name = next(iter(matrices))  # the first embedding model (by name)
        features, matrix = matrices[name]
        hit = np.flatnonzero(features == feature)
        if len(hit) == 0:
            return {**s.none("explanation_embeddings", feature), "embedding_model": name}
        return s.ok(embedding_model=name, embedding_models=list(matrices),
                    neighbours=s.cosine_neighbours(matrix, features, int(hit[0]), labels))

    def _alignment(self, parts: dict[str, Partition | None], feature: int) -> dict[str, Any]:
        part = parts["alignment_scores"]
        if part is None:
            return s.missing("alignment_scores", *_where(parts))
        rows = part.rows(["embedding_model", "ndcg", "has_explanation"], pl.col("feature") == feature)
        return s.ok(scores=rows.sort("embedding_model").to_dicts()) if rows.height else \
            s.none("alignment_scores", feature)

    def _optimized_prompts(self, parts: dict[str, Partition | None], feature: int) -> dict[str, Any]:
        part = parts["optimized_prompts"]
        if part is None:
            return s.missing("optimized_prompts", *_where(parts))
        rows = part.rows(PROMPT_COLUMNS, pl.col("feature") == feature).sort("method")
        return s.ok(prompts=rows.to_dicts()) if rows.height else s.none("optimized_prompts", feature)

    # --- per-partition values, cached per table version --------------------------------------------------------

    def n_features(self, parts: dict[str, Partition | None]) -> int | None:
        """Rows of the partition's ``sae_decoder`` (one per feature), else of ``feature_stats``; None without."""
        part = parts["sae_decoder"] or parts["feature_stats"]
        if part is None:
            return None
        return self.tables.cached(("rows", part.table, part.model, part.layer, part.version),
                                  lambda: int(part.scan().select(pl.len()).collect().item()))

    def label_index(self, parts: dict[str, Partition | None]) -> LabelIndex:
        """The partition's labels; none (logged) when a label table cannot be read: the page still opens."""
        explanations, labelled = parts["explanations"], parts["feature_labels"]
        key = ("labels", *_where(parts), explanations and explanations.version, labelled and labelled.version)
        try:
            return self.tables.cached(key, lambda: _label_index(explanations, labelled))
        except Exception:  # the labels section reports the table's error itself
            log.exception("labels of %s layer %s could not be read", *_where(parts))
            return _label_index(None, None)


def _where(parts: dict[str, Partition | None]) -> tuple[str, str]:
    part = next(p for p in parts.values() if p is not None)
    return part.model, part.layer


def _by_feature(frame: pl.DataFrame, column: str) -> np.ndarray:
    """``column`` indexed by feature (0 where a feature has no row)."""
    features = frame["feature"].to_numpy().astype(np.int64)
    out = np.zeros(int(features.max()) + 1 if len(features) else 0, dtype=np.int64)
    out[features] = frame[column].fill_null(0).to_numpy()
    return out


def _embedding_matrices(part: Partition) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Embedding model -> (features, unit rows float32), models by name."""
    frame = part.scan().select("embedding_model", "feature", "embedding").collect()
    out = {}
    for (name,), group in sorted(frame.group_by("embedding_model"), key=lambda g: str(g[0][0])):
        group = group.sort("feature")
        out[str(name)] = (group["feature"].to_numpy().astype(np.int64),
                          unit_rows(list_matrix(group["embedding"], np.float32)))
    return out


def _label_index(explanations: Partition | None, labelled: Partition | None) -> LabelIndex:
    candidates: dict[str, pl.DataFrame] = {}
    if explanations is not None:
        candidates["explanation"] = (explanations.rows(["feature", "description"], pl.lit(True))
                                     .filter(pl.col("description").str.strip_chars() != "")
                                     .unique("feature", keep="first", maintain_order=True)
                                     .select(pl.col("feature").cast(pl.Int64), "description"))
    if labelled is not None:
        candidates["labels"] = labelled.rows(["feature", *TEXT_COLUMNS[1:]], pl.lit(True)).select(
            pl.col("feature").cast(pl.Int64), *TEXT_COLUMNS[1:])
    if not candidates:
        return LabelIndex({}, pl.DataFrame(schema={"feature": pl.Int64, "text": pl.String}))
    frames = list(candidates.values())
    joined = frames[0] if len(frames) == 1 else frames[0].join(frames[1], on="feature", how="full", coalesce=True)
    joined = joined.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in TEXT_COLUMNS
                                 if c not in joined.columns)
    labels = {}
    for f, label, explanation in joined.select("feature", "label", "description").iter_rows():
        if (shown := shown_label(label, explanation)) is not None:
            labels[int(f)] = shown
    text = joined.select("feature", pl.concat_str(*TEXT_COLUMNS, separator="\n", ignore_nulls=True)
                         .str.to_lowercase().alias("text"))
    return LabelIndex(labels, text.filter(pl.col("text") != "").sort("feature"))
