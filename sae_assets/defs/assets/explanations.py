"""``explanations``: one explanation per feature: Neuronpedia's (``neuronpedia_explanations``) or the platform's
own label."""

from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from sae_assets.core.alignment.explanations import choose_explanations
from sae_assets.defs.assets.feature_labels import feature_labels
from sae_assets.defs.assets.neuronpedia_explanations import neuronpedia_explanations
from sae_assets.defs.automation import cheap_refresh
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.resources.lake import LakeResource


class ExplanationsConfig(dg.Config):
    source: Literal["auto", "neuronpedia", "labels"] = Field(
        default="auto", description="auto: Neuronpedia when the catalog names its ids, else the platform's labels.")
    preferred_types: list[str] = Field(default=["oai_token-act-pair"],
                                       description="Neuronpedia explanation types, most preferred first.")
    preferred_models: list[str] = Field(default=[], description="Explainer models, most preferred first.")


def _from_neuronpedia(upstream: StepInputs, config: ExplanationsConfig) -> pl.DataFrame:
    records = upstream.read("neuronpedia_explanations",
                            ["feature", "description", "explanation_type", "explainer_model", "created_at"],
                            or_else="use source 'labels'")
    return choose_explanations(records.iter_rows(named=True), "neuronpedia", config.preferred_types,
                               config.preferred_models)


def _from_labels(upstream: StepInputs) -> pl.DataFrame:
    labels = upstream.read("feature_labels")
    labels = labels.filter(pl.col("label").is_not_null())
    if labels.is_empty():
        raise dg.Failure(f"{upstream.where}: feature_labels holds no labels for this partition.")
    return labels.select(
        pl.col("feature").cast(pl.Int32), pl.col("label").alias("description"),
        pl.concat_str(pl.lit("sae-assets:"), pl.col("label_source")).alias("explanation_type"),
        pl.col("labeller_model").alias("explainer_model"), pl.lit("labels").alias("source"),
        pl.lit(0, dtype=pl.Int32).alias("n_alternatives"),
    ).sort("feature")


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=[neuronpedia_explanations, feature_labels],
    kinds={"polars", "delta"},
    group_name="alignment",
    code_version="1",
    owners=["team:interpretability"],
    automation_condition=cheap_refresh(),
    description="One explanation per feature: Neuronpedia's (neuronpedia_explanations), one kept per feature by "
    "explanation type, explainer model, then newest; or the platform's own label (feature_labels.label, the "
    "best-scoring candidate).",
)
def explanations(context: dg.AssetExecutionContext, config: ExplanationsConfig,
                 lake: LakeResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    entry, model, layer = location.entry, location.model_key, location.layer
    upstream = StepInputs(lake, "explanations", model, layer)
    source = config.source if config.source != "auto" else ("neuronpedia" if entry.neuronpedia else "labels")
    if source == "neuronpedia":
        if entry.neuronpedia is None:
            raise dg.Failure(f"{model} has no Neuronpedia ids in the catalog; use source 'labels'.")
        frame = _from_neuronpedia(upstream, config)
        origin = f"{entry.neuronpedia.model_id}/{entry.neuronpedia.source_id(layer)}"
    else:
        frame, origin = _from_labels(upstream), "feature_labels"
    written = lake.write_partition("explanations", frame, model, layer)
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "source": source, "origin": origin,
        "features_explained": frame.height,
        "alternatives_dropped": int(frame["n_alternatives"].sum()) if frame.height else 0,
    })
