"""``explanations``: one explanation per feature, from Neuronpedia's exports/API or the platform's own labels."""

import time
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from sae_assets.core.alignment.explanations import MalformedRecord, choose_explanations, normalize
from sae_assets.defs.assets.feature_labels import feature_labels
from sae_assets.defs.automation import cheap_refresh
from sae_assets.defs.metadata import input_table_versions, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.neuronpedia import NeuronpediaClient, NeuronpediaError, NeuronpediaResource


class ExplanationsConfig(dg.Config):
    source: Literal["auto", "neuronpedia", "labels"] = Field(
        default="auto", description="auto: Neuronpedia when the catalog names its ids, else the platform's labels.")
    preferred_types: list[str] = Field(default=["oai_token-act-pair"],
                                       description="Neuronpedia explanation types, most preferred first.")
    preferred_models: list[str] = Field(default=[], description="Explainer models, most preferred first.")
    api_features: list[int] | None = Field(
        default=None, description="Fetch only these features through the API instead of the bulk exports.")


def _from_neuronpedia(context: dg.AssetExecutionContext, client: NeuronpediaClient, model_id: str, source_id: str,
                      config: ExplanationsConfig) -> list[dict]:
    records: list[dict] = []
    if config.api_features is not None:
        for index in config.api_features:
            feature = client.feature(model_id, source_id, index)
            for raw in feature.get("explanations") or []:
                records.append(normalize({**raw, "index": raw.get("index", index)}, f"API feature {index}"))
        return records
    keys = client.list_explanation_batches(model_id, source_id)
    if not keys:
        raise NeuronpediaError(f"No explanation exports under {client.export_prefix(model_id, source_id)} "
                               f"at {client.s3_url}.")
    last = time.perf_counter()
    for n, key in enumerate(keys, start=1):
        records.extend(normalize(r, f"{key} line {line}") for line, r in client.iter_batch(key))
        if time.perf_counter() - last > 10 or n == len(keys):
            last = time.perf_counter()
            context.log.info("Neuronpedia exports: %d/%d batches, %d records", n, len(keys), len(records))
    return records


def _from_labels(lake: LakeResource, model: str, layer: int) -> pl.DataFrame:
    if lake.missing_tables("feature_labels"):
        raise dg.Failure(f"No feature_labels for {model} layer {layer}: materialize feature_labels first.")
    labels = lake.scan_partition("feature_labels", model, layer).filter(pl.col("label").is_not_null()).collect()
    if labels.is_empty():
        raise dg.Failure(f"feature_labels of {model} layer {layer} holds no labels.")
    return labels.select(
        pl.col("feature").cast(pl.Int32), pl.col("label").alias("description"),
        pl.concat_str(pl.lit("sae-assets:"), pl.col("label_source")).alias("explanation_type"),
        pl.col("labeller_model").alias("explainer_model"), pl.lit("labels").alias("source"),
        pl.lit(0, dtype=pl.Int32).alias("n_alternatives"),
    ).sort("feature")


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=[feature_labels],
    kinds={"polars", "delta"},
    group_name="alignment",
    code_version="1",
    owners=["team:interpretability"],
    automation_condition=cheap_refresh(),
    description="One explanation per feature: Neuronpedia's bulk exports (or API for a short list), deduplicated "
    "by explanation type, explainer model, then newest; or the platform's own feature_labels.",
)
def explanations(context: dg.AssetExecutionContext, config: ExplanationsConfig, lake: LakeResource,
                 neuronpedia: NeuronpediaResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    entry, model, layer = location.entry, location.model_key, location.layer
    source = config.source if config.source != "auto" else ("neuronpedia" if entry.neuronpedia else "labels")
    if source == "neuronpedia":
        if entry.neuronpedia is None:
            raise dg.Failure(f"{model} has no Neuronpedia ids in the catalog; use source 'labels'.")
        model_id, source_id = entry.neuronpedia.model_id, entry.neuronpedia.source_id(layer)
        try:
            records = _from_neuronpedia(context, neuronpedia.client(), model_id, source_id, config)
        except (NeuronpediaError, MalformedRecord) as err:
            raise dg.Failure(f"Neuronpedia explanations for {model_id}/{source_id}: {err} "
                             "Nothing was written.") from err
        frame = choose_explanations(records, "neuronpedia", config.preferred_types, config.preferred_models)
        origin = f"{model_id}/{source_id}"
    else:
        frame, origin = _from_labels(lake, model, layer), "feature_labels"
    written = lake.write_partition("explanations", frame, model, layer)
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "source": source, "origin": origin,
        "features_explained": frame.height,
        "alternatives_dropped": int(frame["n_alternatives"].sum()) if frame.height else 0,
    })
