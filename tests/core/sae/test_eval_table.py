"""The sae_evals row, its verdict, and the report's floor across layers."""

from __future__ import annotations

import dataclasses

import polars as pl

from sae_assets.core.sae.eval_report import below_floor_text, layer_report
from sae_assets.core.sae.eval_table import eval_row, verdict
from sae_assets.viewer.sae_sections import EVAL_COLUMNS
from tests.builders import sample_evals

GOOD = sample_evals(dead_fraction=0.02)


def test_verdicts_say_what_a_score_means() -> None:
    assert verdict(GOOD).startswith("CE loss score 0.930 (delta LM loss +0.500")
    broken = dataclasses.replace(GOOD, ce_loss_score=-0.4, ce_loss_with_sae=12.6)
    assert "does worse with this SAE spliced in than with the hook zeroed" in verdict(broken)
    assert "80% of its latents never fired" in verdict(dataclasses.replace(GOOD, dead_fraction=0.8))
    random = dataclasses.replace(GOOD, ce_loss_score=0.4, explained_variance=-0.5)
    assert "worse than their mean would" in verdict(random)
    assert "less than half" in verdict(dataclasses.replace(GOOD, ce_loss_score=0.3))


def test_one_row_with_every_metric() -> None:
    row = eval_row(GOOD, "blocks.2.hook_resid_post", 4, 128, 8, "corpus", 9000, 12.5)
    assert row.height == 1
    assert {"ce_loss_score", "delta_lm_loss", "kl_div_score", "l0_p90", "explained_variance", "verdict"} <= set(
        row.columns)
    assert row.schema["density_histogram"] == pl.List(pl.Int64)
    assert len(row["density_log10_edges"][0]) == len(row["density_histogram"][0]) + 1
    assert set(row.columns) == set(EVAL_COLUMNS)  # what the viewer's SAE page reads


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
