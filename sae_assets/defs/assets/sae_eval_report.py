"""``sae_eval_report``: every layer's ``sae_evals`` of one model side by side, plotted as Gemma Scope plots them."""

import dagster as dg
import numpy as np
import polars as pl

from sae_assets import settings
from sae_assets.core.common.plots import binned_histograms_png, labelled_points_png
from sae_assets.core.sae.eval_report import below_floor_text, layer_report
from sae_assets.defs.assets.sae_evals import sae_evals
from sae_assets.defs.automation import report_refresh
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, md_text, png_markdown, table_metadata
from sae_assets.defs.partitions import model_partitions
from sae_assets.resources.lake import LakeResource


def _table(report: pl.DataFrame) -> str:
    lines = ["| layer | d_sae | L0 | EV | CE loss score | delta LM loss | KL score | dead | dense |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report.iter_rows(named=True):
        flag = " ⚠" if r["below_floor"] else ""
        lines.append(f"| {md_text(str(r['layer']))} | {r['d_sae']:,} | {r['l0']:.1f} | {r['explained_variance']:.3f} | "
                     f"{r['ce_loss_score']:.3f}{flag} | {r['delta_lm_loss']:+.3f} | {r['kl_div_score']:.3f} | "
                     f"{100 * r['dead_fraction']:.1f}% | {100 * r['dense_fraction']:.1f}% |")
    return "\n".join(lines)


def _plots(model: str, report: pl.DataFrame, evals: pl.DataFrame) -> dict[str, dg.MetadataValue]:
    l0, labels = report["l0"].to_numpy(), [f"L{layer}" for layer in report["layer"]]
    plots = {
        "ce_loss_score_vs_l0": labelled_points_png({model: (l0, report["ce_loss_score"].to_numpy(), labels)},
                                                    f"CE loss score against L0: {model}", "L0", "CE loss score"),
        "delta_lm_loss_vs_l0": labelled_points_png({model: (l0, report["delta_lm_loss"].to_numpy(), labels)},
                                                    f"Delta LM loss against L0: {model}", "L0",
                                                    "delta LM loss (nats/token)"),
    }
    ordered = evals.with_columns(pl.col("layer").cast(pl.Int32).alias("i")).sort("i")
    edges = np.array(ordered["density_log10_edges"][0])
    plots["density_histograms"] = binned_histograms_png(
        edges, {f"layer {r['layer']}": np.array(r["density_histogram"]) for r in ordered.iter_rows(named=True)},
        f"Feature density (live latents): {model}", "log10(density)")
    return {name: png_markdown(png, name.replace("_", " ")) for name, png in plots.items()}


@dg.asset(
    partitions_def=model_partitions,
    deps=[dg.AssetDep(sae_evals,
                      partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model"))],
    kinds={"polars", "delta"},
    group_name="sae",
    owners=["team:interpretability"],
    code_version="1",
    automation_condition=report_refresh(),
    description="Per model: every evaluated layer's SAE side by side (CE loss score, delta LM loss, KL score, "
    "L0, explained variance, dead and dense fractions), CE loss score and delta LM loss plotted against L0 and the "
    "density histograms overlaid; layers below the CE loss score floor are flagged.",
)
def sae_eval_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    model = context.partition_key
    inputs = input_table_versions(context, lake)
    evals = StepInputs(lake, "sae_eval_report", model, None).read("sae_evals")  # every layer
    floor = settings.min_ce_loss_score()
    report = layer_report(evals, floor)
    written = lake.write_partition("sae_eval_report", report, model, None)
    warning = below_floor_text(report, floor)
    if warning:
        context.log.warning(f"{model}: {warning}")
    context.log.info(f"SAE eval report for {model}: layers {', '.join(report['layer'])}")
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "layers": report.height, "ce_loss_score_floor": floor,
        "below_floor": dg.MetadataValue.text(warning or "none"),
        "mean_ce_loss_score": float(report["ce_loss_score"].mean()),  # type: ignore[arg-type]
        "report": dg.MetadataValue.md(_table(report)),
        **_plots(model, report, evals),
    })
