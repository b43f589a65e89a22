"""``alignment_report``: SFAL across the layers of one model (the seed's ``scoring_results.csv``)."""

import dagster as dg
import numpy as np
import polars as pl

from sae_assets.core.alignment.report import layer_summary
from sae_assets.core.common.atomic_file import write_atomic
from sae_assets.core.common.plots import lines_png
from sae_assets.defs.assets.alignment_scores import alignment_scores
from sae_assets.defs.automation import report_refresh
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, md_text, png_markdown, table_metadata
from sae_assets.defs.partitions import model_partitions
from sae_assets.resources.lake import LakeResource

REPORT_FILE = "scoring_results.csv"


@dg.asset(
    partitions_def=model_partitions,
    deps=[dg.AssetDep(alignment_scores,
                      partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model"))],
    kinds={"polars", "delta"},
    group_name="alignment",
    owners=["team:interpretability"],
    code_version="1",
    automation_condition=report_refresh(),
    description="Per model: mean and median SFAL NDCG per layer and embedding model (the seed's "
    "scoring_results.csv), as a Delta table, a CSV export and a plot across layers.",
)
def alignment_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    model = context.partition_key
    inputs = input_table_versions(context, lake)
    scores = StepInputs(lake, "alignment_report", model, None).read("alignment_scores")  # every layer
    report = layer_summary(scores)
    written = lake.write_partition("alignment_report", report, model, None)
    csv_path = write_atomic(lake.local_dir("exports", "alignment_report", model) / REPORT_FILE,
                            report.select(pl.lit(model).alias("model"), pl.all()).write_csv())
    layers = report["layer"].unique(maintain_order=True).to_list()
    context.log.info("SFAL report for %s: layers %s, %d rows; CSV %s", model, ", ".join(layers), report.height,
                     csv_path)
    series = {name: (group["layer"].cast(pl.Int32).to_numpy(), group["mean_ndcg"].to_numpy())
              for (name,), group in report.group_by("embedding_model", maintain_order=True)}
    table = "\n".join(["| layer | embedding model | mean NDCG | median NDCG | features | explained |",
                       "|---|---|---|---|---|---|"] + [
        f"| {r['layer']} | {md_text(r['embedding_model'])} | {r['mean_ndcg']:.4f} | {r['median_ndcg']:.4f} | "
        f"{r['n_features']} | {r['n_explained']} |" for r in report.iter_rows(named=True)])
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "layers": len(layers), "csv": dg.MetadataValue.path(str(csv_path)),
        "mean_ndcg": float(np.mean(report["mean_ndcg"].to_numpy())),
        "report": dg.MetadataValue.md(table),
        "mean_ndcg_by_layer": png_markdown(lines_png(series, f"SFAL across layers: {model}", "layer",
                                                     "mean NDCG"), "mean NDCG by layer"),
    })
