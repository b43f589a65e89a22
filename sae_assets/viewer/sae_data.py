"""Everything the lake knows about one model × layer's SAE as a whole: the SAE page's data.

:meth:`SaeReader.page` returns JSON-able sections (statuses as :mod:`sae_assets.viewer.sections`; builders in
:mod:`sae_assets.viewer.sae_sections`): ``evals`` (the partition's ``sae_evals`` row: the eval card) and
``density`` (its histogram of live latents by log10 density), ``labels`` (feature_labels: wins per label source,
mean shown-label score), ``alignment`` (alignment_scores: SFAL NDCG per embedding model over the features with an
explanation), and the feature lists ``densest``, ``rarest`` (live; feature_stats) and ``best_labelled``
(feature_labels). Each table is optional: a section whose table or partition is absent names the asset to
materialize. A model × layer that no table holds is NotFound (the API's 404). Whole-partition reads are cached per
table version, as the feature page's are. Plain polars: no Dagster, no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl

from sae_assets import settings
from sae_assets.viewer import sae_sections as ss
from sae_assets.viewer import sections as s
from sae_assets.viewer.feature_data import TABLES, FeatureReader, guarded_section
from sae_assets.viewer.lake_tables import Partition

log = logging.getLogger(__name__)

EVALS = "sae_evals"
SAE_TABLES = (EVALS, *TABLES)
"""Tables looked up: the page reads sae_evals, feature_stats, feature_labels, alignment_scores and (for labels and
the width) explanations and sae_decoder; a partition any of the feature page's tables holds is not a 404."""
SAE_SECTIONS = ("evals", "density", "labels", "alignment", "densest", "rarest", "best_labelled")


class SaeReader:
    """Reads SAE pages from the lake of a :class:`FeatureReader` (sharing its tables and cache)."""

    def __init__(self, features: FeatureReader) -> None:
        self.features = features
        self.tables = features.tables

    def page(self, model: str, layer: int) -> dict[str, Any]:
        """The SAE's page: ``{"model", "layer", "n_features", "sections": {...}}`` (sections: :data:`SAE_SECTIONS`)."""
        parts = self.features.partitions(model, layer, SAE_TABLES)
        labels = self.features.label_index(parts).labels
        where = (model, layer)
        evals = _guarded("evals", lambda: self._evals(parts[EVALS], where))

        def whole(name: str, table: str, columns: list[str],
                  build: Callable[[pl.DataFrame], dict[str, Any]]) -> dict[str, Any]:
            return _guarded(name, lambda: self._whole(parts, name, table, columns, build))

        stats = ["feature", "density"]
        sections: dict[str, dict[str, Any]] = {
            "evals": evals.get("evals", evals),
            "density": evals.get("density", evals),
            "labels": whole("labels", "feature_labels", ss.LABEL_COLUMNS, ss.label_quality),
            "alignment": whole("alignment", "alignment_scores", ["embedding_model", "ndcg", "has_explanation"],
                               ss.alignment_summary),
            "densest": whole("densest", "feature_stats", stats, lambda f: ss.densest(f, labels)),
            "rarest": whole("rarest", "feature_stats", stats, lambda f: ss.rarest(f, labels)),
            "best_labelled": whole("best_labelled", "feature_labels", ["feature", "label_source", "score"],
                                   lambda f: ss.best_labelled(f, labels)),
        }
        n_features = self.features.n_features(parts)
        if n_features is None:  # no sae_decoder nor feature_stats: the evaluated SAE's width
            n_features = sections["evals"].get("d_sae")
        return s.jsonable({"model": model, "layer": layer, "n_features": n_features, "sections": sections})

    def _evals(self, part: Partition | None, where: tuple[str, int]) -> dict[str, Any]:
        """``{"evals": ..., "density": ...}`` from the partition's row, or one status for both."""
        if part is None:
            return s.missing(EVALS, *where)
        row = s.first_row(part.rows(ss.EVAL_COLUMNS, pl.lit(True)))
        if row is None:
            return {"status": "none", "table": EVALS, "message": f"{EVALS} has no row for {where[0]} layer {where[1]}"}
        floor = settings.min_ce_loss_score()  # read per page: as the sae_evals check reads it
        return {"evals": ss.evals_section(row, floor), "density": ss.density_section(row)}

    def _whole(self, parts: Mapping[str, Partition | None], name: str, table: str, columns: list[str],
               build: Callable[[pl.DataFrame], dict[str, Any]]) -> dict[str, Any]:
        """Section ``name``: ``build`` of the partition's ``columns`` of ``table`` (those it lacks as nulls), cached
        under the versions of every table of the page (labels name the listed features); the asset to materialize
        when the partition is absent."""
        part = parts[table]
        if part is None:
            first = next(p for p in parts.values() if p is not None)
            return s.missing(table, first.model, first.layer)
        versions = tuple(p and p.version for p in parts.values())
        key = ("sae_page", name, part.model, part.layer, versions)
        return self.tables.cached(key, lambda: build(part.rows(columns, pl.lit(True))))


def _guarded(name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return guarded_section("SAE page", name, build)
