"""``neuronpedia_explanations``: every explanation Neuronpedia has for the partition's features, as published.

Raw and complete (every explainer model, type and re-run), so two readers choose from it by their own rule:
``feature_labels`` scores each one on held-out windows as a label candidate, and ``explanations`` keeps one per
feature by type / explainer preference. A model without Neuronpedia ids in the catalog gets an empty partition
(it has no Neuronpedia explanations), so the analysis jobs run it for every SAE. A malformed record (no integer
index, a description that is not text, a line that is not JSON) is skipped and counted, up to
``max_malformed_fraction`` of the records.
"""

import time

import dagster as dg
import polars as pl
from pydantic import Field

from sae_assets.core.alignment.explanations import RecordTally, TooManyMalformed
from sae_assets.defs.metadata import input_table_versions, md_text, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.neuronpedia import NeuronpediaClient, NeuronpediaError, NeuronpediaResource

RECORD_SCHEMA = {"feature": pl.Int32, "description": pl.String, "explanation_type": pl.String,
                 "explainer_model": pl.String, "created_at": pl.String}


class NeuronpediaExplanationsConfig(dg.Config):
    api_features: list[int] | None = Field(
        default=None, description="Fetch only these features through the API instead of the bulk exports.")
    max_malformed_fraction: float = Field(
        default=0.01, ge=0.0, le=1.0,
        description="Records that are not JSON objects (a line that is not JSON) or lack an integer index or a text "
        "description (a number, null, list or object, or "
        "blank) are skipped and counted; when more than this fraction of the records read are malformed the run "
        "fails, naming an example record (batch key and line), and writes nothing. 0: fail on the first.")


def fetch_records(log: dg.DagsterLogManager, client: NeuronpediaClient, model_id: str, source_id: str,
                  api_features: list[int] | None, tally: RecordTally) -> list[dict]:
    """Normalized explanation records of one Neuronpedia source (bulk S3 exports, or the API for a few features);
    malformed records are left out and counted in ``tally``. Raises :class:`NeuronpediaError` before anything is
    written."""
    records: list[dict] = []
    if api_features is not None:
        for index in api_features:
            feature = client.feature(model_id, source_id, index)
            for n, raw in enumerate(feature.get("explanations") or [], start=1):
                where = f"API feature {index} explanation {n}"
                record = tally.keep({"index": index, **raw} if isinstance(raw, dict) else raw, where)
                if record is not None:
                    records.append(record)
        return records
    keys = client.list_explanation_batches(model_id, source_id)
    if not keys:
        raise NeuronpediaError(f"No explanation exports under {client.export_prefix(model_id, source_id)} "
                               f"at {client.s3_url}.")
    last = time.perf_counter()
    for n, key in enumerate(keys, start=1):
        def bad_line(line: int, problem: str, key: str = key) -> None:
            tally.skip(f"{key} line {line}", f"the line {problem}", "a line that is not a JSON object")

        for line, raw in client.iter_batch(key, on_bad_line=bad_line):
            if (record := tally.keep(raw, f"{key} line {line}")) is not None:
                records.append(record)
        if time.perf_counter() - last > 10 or n == len(keys):
            last = time.perf_counter()
            log.info("Neuronpedia exports: %d/%d batches, %d records", n, len(keys), len(records))
    return records


@dg.asset(
    partitions_def=model_layer_partitions,
    kinds={"polars", "delta"},
    group_name="alignment",
    code_version="1",
    owners=["team:interpretability"],
    description="Every Neuronpedia explanation of the partition's features (bulk S3 exports, or the API for a "
    "short list), as published; empty for a model without Neuronpedia ids in the catalog. Scored as label "
    "candidates by feature_labels; one per feature kept by explanations.",
)
def neuronpedia_explanations(context: dg.AssetExecutionContext, config: NeuronpediaExplanationsConfig,
                             lake: LakeResource, neuronpedia: NeuronpediaResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    entry, model, layer = location.entry, location.model_key, location.layer
    tally = RecordTally()
    if entry.neuronpedia is None:
        frame, origin = pl.DataFrame(schema=RECORD_SCHEMA), f"none: {model} has no Neuronpedia ids in the catalog"
        context.log.info("%s has no Neuronpedia ids in the catalog: writing an empty partition", model)
    else:
        model_id, source_id = entry.neuronpedia.model_id, entry.neuronpedia.source_id(layer)
        try:
            records = fetch_records(context.log, neuronpedia.client(), model_id, source_id, config.api_features,
                                    tally)
            tally.check(config.max_malformed_fraction)
        except (NeuronpediaError, TooManyMalformed) as err:
            raise dg.Failure(f"Neuronpedia explanations for {model_id}/{source_id}: {err} "
                             "Nothing was written.") from err
        if tally.skipped:
            context.log.warning("Neuronpedia explanations for %s/%s: skipped %s", model_id, source_id,
                                tally.summary())
        frame, origin = pl.DataFrame(records, schema=RECORD_SCHEMA).sort("feature", maintain_order=True), \
            f"{model_id}/{source_id}"
    written = lake.write_partition("neuronpedia_explanations", frame, model, layer)
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "origin": origin, "records": frame.height,
        "features_explained": frame["feature"].n_unique() if frame.height else 0,
        "records_malformed_skipped": tally.skipped,
        **({"malformed_examples": dg.MetadataValue.md("\n".join(f"- {md_text(e)}" for e in tally.examples))}
           if tally.examples else {}),
    })
