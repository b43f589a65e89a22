"""``explanation_embeddings``: one normalized vector per feature × embedding model."""

import time

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from sae_assets.core.common.progress import Progress, heartbeat
from sae_assets.defs.assets.explanations import explanations
from sae_assets.defs.automation import cheap_refresh
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.resources.embedder import EmbedderError, EmbedderResource
from sae_assets.resources.lake import LakeResource

ENCODE_BLOCK = 2048


class ExplanationEmbeddingsConfig(dg.Config):
    models: list[str] = Field(default=["all-MiniLM-L6-v2"], description="sentence-transformers models (name or "
                              "path), e.g. Lajavaness/bilingual-embedding-large where the hub is reachable.")


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=[explanations],
    kinds={"torch", "polars", "delta"},
    group_name="alignment",
    code_version="1",
    owners=["team:interpretability"],
    automation_condition=cheap_refresh(),
    description="Embeddings of the explanations (L2-normalized list<float32>), one row per feature × model; "
    "features without an explanation get no row.",
)
def explanation_embeddings(context: dg.AssetExecutionContext, config: ExplanationEmbeddingsConfig,
                           lake: LakeResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    texts = StepInputs(lake, "explanation_embeddings", location.model_key, location.layer).read(
        "explanations", ["feature", "description"], keep=pl.col("description").str.strip_chars() != "")
    frames, rates = [], {}
    for name in config.models:
        start = time.perf_counter()
        descriptions = texts["description"].to_list()
        parts = []
        with heartbeat(context.log.info, f"embeddings with {name}") as report:  # loading a model is silent
            progress = Progress(f"embeddings with {name}", len(descriptions), "explanations", report)
            try:
                for first in range(0, len(descriptions), ENCODE_BLOCK):  # in blocks: progress every 10 s
                    parts.append(embedder.encode(descriptions[first : first + ENCODE_BLOCK], model=name))
                    progress.advance(len(parts[-1]))
            except EmbedderError as err:
                raise dg.Failure(str(err)) from err
        vectors = np.concatenate(parts)
        rates[name] = round(texts.height / (time.perf_counter() - start), 1)
        context.log.info("Embedded %d explanations with %s (%.0f/s)", texts.height, name, rates[name])
        frames.append(pl.DataFrame({
            "feature": texts["feature"].cast(pl.Int32),
            "embedding_model": [name] * texts.height,
            "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])).cast(pl.List(pl.Float32)),
        }))
    written = lake.write_partition("explanation_embeddings", pl.concat(frames), location.model_key, location.layer)
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "models": ", ".join(config.models), "features": texts.height,
        **{f"embeddings_per_second[{m}]": r for m, r in rates.items()},
    })
