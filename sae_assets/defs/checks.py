"""Asset checks on every asset, per partition: each reads the partition it checks from the lake.

Rules are polars expressions that flag bad rows (NaN/Inf in vectors and scores, densities outside [0, 1],
empty labels...); row-count checks compare a per-feature table with the partition's ``sae_decoder`` (d_sae
rows); the explained-variance floors (``SAE_ASSETS_MIN_EXPLAINED_VARIANCE``, default 0.5) are blocking, so a
broken SAE stops the run before the scan or what reads the scan.
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import polars as pl

from sae_assets import settings
from sae_assets.core.common.progress import Progress, tracked
from sae_assets.defs.partitions import model_and_layer, model_layer_partitions, model_partitions
from sae_assets.resources.lake import LakeResource

EVAL_METRICS = ("explained_variance", "mse", "l0", "ce_loss_with_sae", "ce_loss_score", "kl_div_score")
PREVIEW_ROWS = 5
CHECK_BATCH_ROWS = 4096
"""Rows per block a rule reads (the co-occurrence histograms of a 32k-latent SAE do not fit in memory whole)."""


def ev_floor() -> float:
    return settings.min_explained_variance()


def finite_list(column: str) -> pl.Expr:
    """True where every element of a list<float> column is finite (and the list is not null)."""
    return pl.col(column).list.eval(pl.element().is_finite()).list.all().fill_null(False)


@dataclass(frozen=True)
class Rule:
    asset: str
    name: str
    description: str
    bad: Callable[[], pl.Expr]
    """Rows that break the rule."""
    columns: tuple[str, ...]
    blocking: bool = False
    table: str | None = None
    """The Delta table read (default: the asset's own)."""
    may_be_empty: bool = False
    """No rows is a valid outcome (e.g. no decoder pair reaches the edge threshold), not a failure."""


RULES = [
    Rule("sae_decoder", "finite_decoder", "Decoder vectors are finite with a positive norm.",
         lambda: ~finite_list("decoder") | ~(pl.col("decoder_norm") > 0), ("feature", "decoder", "decoder_norm")),
    Rule("trained_sae", "finite_metrics", "Training metrics are finite.",
         lambda: ~pl.all_horizontal(pl.col("explained_variance", "mse", "l0", "dead_fraction").is_finite()),
         ("explained_variance", "mse", "l0", "dead_fraction")),
    Rule("sae_evals", "finite_evals", "Every eval metric is finite; fractions are in [0, 1].",
         lambda: ~pl.all_horizontal(pl.col(EVAL_METRICS).is_finite())
         | ~pl.all_horizontal(pl.col("dead_fraction", "dense_fraction").is_between(0, 1)),
         ("hook_name", *EVAL_METRICS)),
    Rule("feature_stats", "density_in_unit_interval", "Densities are in [0, 1]; statistics are finite.",
         lambda: ~pl.col("density").is_between(0, 1) | ~pl.col("max_activation").is_finite()
         | ~pl.col("activation_entropy").is_finite(), ("feature", "density", "max_activation", "activation_entropy")),
    Rule("activation_examples", "finite_activations", "Example activations are finite.",
         lambda: ~pl.col("activation").is_finite() | ~finite_list("token_activations"),
         ("feature", "kind", "activation")),
    Rule("cooccurrence", "valid_counts", "Each feature's marginal is in [0, n_windows]; its partners are "
         "ascending, exclude itself and align with counts in [1, marginal].",
         lambda: (pl.col("marginal") < 0) | (pl.col("marginal") > pl.col("n_windows"))
         | (pl.col("partners").list.len() != pl.col("counts").list.len())
         | (pl.col("counts").list.min() < 1) | (pl.col("counts").list.max() > pl.col("marginal"))
         | pl.col("partners").list.contains(pl.col("feature")) | (pl.col("partners").list.min() < 0)
         | pl.col("partners").list.eval(pl.element().diff() <= 0).list.any(),
         ("feature", "marginal", "n_windows")),
    Rule("feature_profiles", "finite_profiles", "Activation profiles are finite.",
         lambda: ~finite_list("profile"), ("feature",)),
    Rule("feature_labels", "labels_non_empty", "Every label without an error is non-empty text.",
         lambda: pl.col("error").is_null() & (pl.col("label").fill_null("").str.strip_chars() == ""),
         ("feature", "label", "error")),
    Rule("feature_labels", "label_is_best_candidate", "Each label is the candidate its label_source names, and its "
         "score is the highest of the candidates' scores (core/labels/choice.py).",
         lambda: pl.col("label").is_not_null() & (
             (pl.col("label") != pl.when(pl.col("label_source") == "llm").then("label_llm")
              .when(pl.col("label_source") == "keywords").then("label_keywords")
              .when(pl.col("label_source") == "explanation").then("label_explanation")).fill_null(True)
             | (pl.col("score") < pl.max_horizontal("score_llm", "score_keywords", "score_explanation")).fill_null(
                 False)),
         ("feature", "label", "label_source", "score")),
    Rule("neuronpedia_explanations", "records_valid", "Every record names a feature (>= 0) and has a description.",
         lambda: (pl.col("feature") < 0) | pl.col("description").is_null(), ("feature", "description"),
         may_be_empty=True),
    Rule("explanations", "descriptions_non_empty", "Each explanation has a non-empty description.",
         lambda: pl.col("description").fill_null("").str.strip_chars() == "", ("feature", "description")),
    Rule("explanation_embeddings", "finite_unit_embeddings", "Embeddings are finite and L2-normalized.",
         lambda: ~finite_list("embedding")
         | ((pl.col("embedding").list.eval(pl.element().pow(2)).list.sum().sqrt() - 1).abs() > 1e-3),
         ("feature", "embedding_model")),
    Rule("alignment_scores", "ndcg_in_unit_interval", "NDCG scores are finite and in [0, 1].",
         lambda: ~pl.col("ndcg").is_between(0, 1), ("feature", "embedding_model", "ndcg")),
    Rule("feature_clusters", "finite_coordinates", "Kept features have finite 2-D coordinates.",
         lambda: pl.col("kept") & ~(pl.col("x").is_finite() & pl.col("y").is_finite()), ("feature", "x", "y")),
    Rule("optimized_prompts", "finite_activation", "Optimized activations and cross-entropies are finite.",
         lambda: ~pl.col("activation").is_finite() | pl.col("cross_entropy").is_infinite(),
         ("feature", "method", "activation", "cross_entropy")),
    Rule("feature_map", "finite_positions", "3-D positions are finite.",
         lambda: ~pl.all_horizontal(pl.col("x", "y", "z").is_finite()), ("feature", "x", "y", "z")),
    Rule("feature_map", "edges_valid", "Edges (table feature_map_edges) are cosines in [-1, 1], no self-edges.",
         lambda: ~pl.col("similarity").is_between(-1.0001, 1.0001) | (pl.col("source") == pl.col("target")),
         ("source", "target", "similarity"), table="feature_map_edges", may_be_empty=True),
    Rule("logit_effects", "ranked_logit_effects", "Each feature has as many promoted and suppressed ids, tokens and "
         "finite values (at least one); promoted values descend, suppressed values ascend.",
         lambda: ~finite_list("promoted_values") | ~finite_list("suppressed_values")
         | ~(pl.col("promoted_ids").list.len() > 0)
         | pl.any_horizontal(pl.col(c).list.len() != pl.col("promoted_ids").list.len() for c in (
             "promoted_tokens", "promoted_values", "suppressed_ids", "suppressed_tokens", "suppressed_values"))
         | pl.col("promoted_values").list.eval(pl.element().diff() > 0).list.any()
         | pl.col("suppressed_values").list.eval(pl.element().diff() < 0).list.any(),
         ("feature", "promoted_values", "suppressed_values")),
]
# Per-feature tables: exactly one row per SAE feature (the partition's sae_decoder rows).
ONE_ROW_PER_FEATURE = ["feature_stats", "feature_profiles", "feature_clusters", "feature_map", "logit_effects"]


def _partition(context: dg.AssetCheckExecutionContext) -> tuple[str, int]:
    model, layer = model_and_layer(context.partition_key)
    return model, int(layer)


def _missing(lake: LakeResource, *tables: str) -> dg.AssetCheckResult | None:
    """A failed result naming the tables that do not exist yet, or None when all do."""
    missing = lake.missing_tables(*tables)
    if missing:
        return dg.AssetCheckResult(passed=False, description=f"table(s) {', '.join(missing)} do not exist in "
                                   f"{lake.root_uri}")
    return None


def rule_check(rule: Rule, key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=key, name=rule.name, description=rule.description, blocking=rule.blocking,
                    partitions_def=model_layer_partitions)
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        model, layer = _partition(context)
        table = rule.table or rule.asset
        if (missing := _missing(lake, table)) is not None:
            return missing
        n_bad = 0
        preview: list[pl.DataFrame] = []
        rows = lake.scan_partition(table, model, layer).select(pl.len()).collect().item()
        progress = Progress(f"check {rule.name} on {table}", rows, "rows", context.log.info)
        blocks = lake.iter_partition(table, model, layer, batch_rows=CHECK_BATCH_ROWS)  # bounded: one block at a time
        for frame in tracked(blocks, progress, len):
            bad = frame.filter(rule.bad()).select(rule.columns)
            n_bad += bad.height
            if bad.height and sum(p.height for p in preview) < PREVIEW_ROWS:
                preview.append(bad.head(PREVIEW_ROWS))
        return dg.AssetCheckResult(
            passed=(rows > 0 or rule.may_be_empty) and n_bad == 0,
            description=None if rows else "no rows for this partition",
            metadata={"rows": rows, "bad_rows": n_bad,
                      "examples": dg.MetadataValue.md(str(pl.concat(preview).head(PREVIEW_ROWS)) if n_bad else "none")})

    return _check


def row_count_check(asset: str, key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=key, name="one_row_per_feature", partitions_def=model_layer_partitions,
                    description="One row per SAE feature: as many rows as the partition's sae_decoder, no duplicates.")
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        model, layer = _partition(context)
        if (missing := _missing(lake, asset, "sae_decoder")) is not None:
            return missing
        d_sae = lake.scan_partition("sae_decoder", model, layer).select(pl.len()).collect().item()
        counts = lake.scan_partition(asset, model, layer).select(
            pl.len().alias("rows"), pl.col("feature").n_unique().alias("features"),
            pl.col("feature").max().alias("max_feature")).collect().row(0, named=True)
        passed = counts["rows"] == counts["features"] == d_sae and (counts["max_feature"] or 0) < d_sae
        return dg.AssetCheckResult(passed=bool(passed), metadata={"d_sae": d_sae, **counts})

    return _check


@dg.asset_check(asset="trained_sae", name="explained_variance_floor", blocking=True,
                partitions_def=model_layer_partitions,
                description="Held-out explained variance of the trained SAE is at least the floor "
                f"({settings.MIN_EXPLAINED_VARIANCE}, default 0.5); blocking: below it the decoder is not published, "
                "nor scanned.")
def trained_ev_floor(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    model, layer = _partition(context)
    if (missing := _missing(lake, "trained_sae")) is not None:
        return missing
    ev = lake.scan_partition("trained_sae", model, layer).select("explained_variance").collect()
    value = float(ev.item(0, 0)) if ev.height else float("nan")
    return dg.AssetCheckResult(passed=value >= ev_floor(), metadata={"explained_variance": value, "floor": ev_floor()})


@dg.asset_check(asset="feature_stats", name="scan_explained_variance_floor", blocking=True,
                partitions_def=model_layer_partitions,
                description="The explained variance the scan measured (any SAE source, pretrained included) is at "
                f"least the floor ({settings.MIN_EXPLAINED_VARIANCE}); blocking for what reads the scan.")
def scan_ev_floor(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("feature_stats"), asset_partitions=[context.partition_key]),
        limit=1).records
    meta = records[0].asset_materialization.metadata if records else {}
    if "explained_variance" not in meta:
        return dg.AssetCheckResult(passed=False, description="no explained_variance in the scan's metadata")
    value = float(meta["explained_variance"].value)
    return dg.AssetCheckResult(passed=value >= ev_floor(), metadata={"explained_variance": value, "floor": ev_floor()})


@dg.asset_check(asset="sae_evals", name="ce_loss_score_floor", partitions_def=model_layer_partitions,
                description="The SAE keeps at least the floor's fraction of the model's loss when spliced in "
                f"({settings.MIN_CE_LOSS_SCORE}, default {settings.DEFAULT_MIN_CE_LOSS_SCORE}); a negative score "
                "means worse than zeroing the hook: a broken or mismatched SAE.")
def ce_loss_score_floor(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    model, layer = _partition(context)
    if (missing := _missing(lake, "sae_evals")) is not None:
        return missing
    rows = lake.scan_partition("sae_evals", model, layer).select("ce_loss_score", "verdict").collect()
    if rows.is_empty():
        return dg.AssetCheckResult(passed=False, description="no sae_evals row for this partition")
    score, floor = float(rows["ce_loss_score"][0]), settings.min_ce_loss_score()
    passed = score >= floor
    return dg.AssetCheckResult(
        passed=passed, metadata={"ce_loss_score": score, "floor": floor},
        description=None if passed else f"CE loss score {score:.3f} is below the floor {floor}. {rows['verdict'][0]}")


@dg.asset_check(asset="alignment_report", name="ndcg_in_unit_interval", partitions_def=model_partitions,
                description="Mean and median NDCG of every layer are in [0, 1].")
def report_ndcg_range(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    if (missing := _missing(lake, "alignment_report")) is not None:
        return missing
    frame = lake.scan_partition("alignment_report", context.partition_key).collect()
    bad = frame.filter(~pl.col("mean_ndcg").is_between(0, 1) | ~pl.col("median_ndcg").is_between(0, 1))
    return dg.AssetCheckResult(passed=frame.height > 0 and bad.height == 0,
                               metadata={"rows": frame.height, "bad_rows": bad.height})


@dg.asset_check(asset="sae_eval_report", name="every_layer_scored", partitions_def=model_partitions,
                description="Every layer of the report has a finite CE loss score and L0.")
def eval_report_scored(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    if (missing := _missing(lake, "sae_eval_report")) is not None:
        return missing
    frame = lake.scan_partition("sae_eval_report", context.partition_key).collect()
    bad = frame.filter(~pl.all_horizontal(pl.col("ce_loss_score", "l0").is_finite()))
    return dg.AssetCheckResult(passed=frame.height > 0 and bad.height == 0,
                               metadata={"rows": frame.height, "bad_rows": bad.height,
                                         "below_floor": int(frame["below_floor"].sum()) if frame.height else 0})


def build_checks() -> list[dg.AssetChecksDefinition]:
    return ([rule_check(rule, dg.AssetKey(rule.asset)) for rule in RULES]
            + [row_count_check(asset, dg.AssetKey(asset)) for asset in ONE_ROW_PER_FEATURE]
            + [trained_ev_floor, scan_ev_floor, ce_loss_score_floor, report_ndcg_range, eval_report_scored])


@dg.definitions
def check_definitions() -> dg.Definitions:
    """What the defs-folder loader takes from this module: every check above, built from the rule tables."""
    return dg.Definitions(asset_checks=build_checks())
