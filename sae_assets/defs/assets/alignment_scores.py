"""``alignment_scores``: SFAL's per-feature NDCG of co-occurrence (Phi) rankings against explanation similarity."""

import time
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import torch
from pydantic import Field

from sae_assets.core.alignment.sfal import DEFAULT_TOP_N, sfal_ndcg
from sae_assets.core.common.list_columns import list_matrix
from sae_assets.core.common.progress import Progress, heartbeat, tracked
from sae_assets.core.scan.cooccurrence import dense_counts
from sae_assets.defs.assets.explanation_embeddings import explanation_embeddings
from sae_assets.defs.automation import cheap_refresh
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource


class AlignmentConfig(dg.Config):
    top_n: int = Field(default=DEFAULT_TOP_N, description="NDCG cut-off (SFAL: 1023), capped at d_sae - 1.")


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=["sae_decoder", "cooccurrence", explanation_embeddings],
    kinds={"torch", "polars", "delta"},
    group_name="alignment",
    code_version="1",
    owners=["team:interpretability"],
    automation_condition=cheap_refresh(),
    description="Per feature and embedding model: NDCG@top_n of the Phi (co-occurrence) ranking against the "
    "explanation-similarity ranking (SFAL); features without an explanation count as zero vectors.",
)
def alignment_scores(context: dg.AssetExecutionContext, config: AlignmentConfig, lake: LakeResource,
                     device: DeviceResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    model, layer = location.model_key, location.layer
    upstream = StepInputs(lake, "alignment_scores", model, layer)
    d = upstream.d_sae()
    upstream.require("cooccurrence")
    windows = upstream.scan("cooccurrence").select(pl.col("n_windows").max()).collect().item()
    embeddings = upstream.read("explanation_embeddings")
    if d < 2:
        raise dg.Failure(f"{upstream.where}: the SAE has {d} feature; SFAL ranks a feature's partners.")
    dev = device.torch_device()
    start = time.perf_counter()
    # The histogram rows are read a block at a time into one int32 matrix (4 d^2 bytes on the device).
    blocks = lake.iter_partition("cooccurrence", model, layer, ["feature", "marginal", "partners", "counts"])
    counts = dense_counts(tracked(blocks, Progress("cooccurrence read", d, "features", context.log.info), len), d, dev)
    n_windows = int(windows)
    frames: list[pl.DataFrame] = []
    summary: dict[str, dict[str, Any]] = {}
    for name, group in embeddings.group_by("embedding_model", maintain_order=True):
        name = name[0]
        matrix = list_matrix(group["embedding"], np.float64)
        vectors = torch.zeros((d, matrix.shape[1]), dtype=torch.float64, device=dev)  # SFAL: no explanation -> 0
        rows = torch.from_numpy(group["feature"].to_numpy().astype(np.int64)).to(dev)
        vectors[rows] = torch.from_numpy(matrix).to(dev)
        # more than 10 s can pass before the first progress line: at 8,192+ features the ranking kernel is loaded
        # first, and compiled on its first use on a machine (~20 s on 2 cores; cached on disk afterwards)
        with heartbeat(context.log.info, f"SFAL NDCG {model} layer {layer}, {name}") as report:
            ndcg = sfal_ndcg(counts, n_windows, vectors, top_n=config.top_n, report=report).cpu().numpy()
        frames.append(pl.DataFrame({"feature": pl.Series(range(d), dtype=pl.Int32),
                                    "embedding_model": [name] * d, "ndcg": ndcg,
                                    "has_explanation": np.isin(np.arange(d), group["feature"].to_numpy())}))
        deciles = np.quantile(ndcg, np.linspace(0.1, 0.9, 9))
        summary[name] = {"mean": float(ndcg.mean()), "median": float(np.median(ndcg)),
                         "deciles": [round(float(x), 4) for x in deciles], "features": d,
                         "explained": int(group.height)}
        context.log.info("%s layer %d, %s: mean NDCG %.4f over %d features", model, layer, name, ndcg.mean(), d)
    written = lake.write_partition("alignment_scores", pl.concat(frames), model, layer)
    first = next(iter(summary.values()))
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "mean_ndcg": first["mean"], "median_ndcg": first["median"],
        "summary": dg.MetadataValue.json(summary), "top_n": min(config.top_n, d - 1),
        "seconds": round(time.perf_counter() - start, 2),
    })
