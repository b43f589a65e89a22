"""The sae_evals row, its verdict, and the report's floor across layers."""

from __future__ import annotations

import dataclasses

import polars as pl
import torch

from sae_assets.core.sae.eval_report import below_floor_text, layer_report
from sae_assets.core.sae.eval_table import eval_row, verdict
from sae_assets.core.sae.evals import DENSITY_EDGES, SaeEvals

GOOD = SaeEvals(
    n_tokens=1000, explained_variance=0.9, mse=1.0, cossim=0.95, l2_norm_in=10.0, l2_norm_out=9.5, l2_ratio=0.95,
    relative_reconstruction_bias=1.0, l1=50.0, l0=32.0, l0_quantiles={"p10": 30.0, "p50": 32.0, "p90": 34.0,
                                                                       "max": 40.0},
    dead_fraction=0.02, dense_fraction=0.01, density_histogram=[0] * (len(DENSITY_EDGES) - 1),
    feature_density=torch.zeros(4), ce_loss_without_sae=3.0, ce_loss_with_sae=3.5, ce_loss_with_ablation=10.0,
    ce_loss_score=0.93, delta_lm_loss=0.5, kl_div_with_sae=0.6, kl_div_with_ablation=8.0, kl_div_score=0.92)


def test_verdicts_say_what_a_score_means() -> None:
    assert verdict(GOOD).startswith("CE loss score 0.930 (delta LM loss +0.500")
    broken = dataclasses.replace(GOOD, ce_loss_score=-0.4, ce_loss_with_sae=12.6)
    assert "does worse with this SAE spliced in than with the hook zeroed" in verdict(broken)
    assert "80% of its latents never fired" in verdict(dataclasses.replace(GOOD, dead_fraction=0.8))


def test_one_row_with_every_metric() -> None:
    row = eval_row(GOOD, "blocks.2.hook_resid_post", 4, 128, 8, "corpus", 9000, 12.5)
    assert row.height == 1
    assert {"ce_loss_score", "delta_lm_loss", "kl_div_score", "l0_p90", "explained_variance", "verdict"} <= set(
        row.columns)
    assert row.schema["density_histogram"] == pl.List(pl.Int64)
    assert len(row["density_log10_edges"][0]) == len(row["density_histogram"][0]) + 1


def test_report_orders_layers_and_names_those_below_the_floor() -> None:
    rows = pl.concat([
        eval_row(dataclasses.replace(GOOD, ce_loss_score=score), f"blocks.{layer}.hook_resid_post", 4, 128, 8, "c", 0,
                 1.0).with_columns(pl.lit(str(layer)).alias("layer"))
        for layer, score in ((10, 0.9), (2, -0.2), (6, 0.4))])
    report = layer_report(rows, floor=0.5)
    assert report["layer"].to_list() == ["2", "6", "10"]
    assert report["below_floor"].to_list() == [True, True, False]
    text = below_floor_text(report, 0.5)
    assert text is not None and "layer 2 (-0.200), layer 6 (0.400)" in text
    assert below_floor_text(layer_report(rows, floor=-1.0), -1.0) is None
