"""StepInputs: a step's missing input fails with one sentence naming the table, the partition and the asset to
materialize; d_sae is the partition's sae_decoder row count."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sae_assets.defs.inputs import StepInputs
from sae_assets.resources.lake import LakeResource

MODEL = "m@x"


def _decoder(n: int) -> pl.DataFrame:
    return pl.DataFrame({"feature": pl.Series(range(n)[::-1], dtype=pl.Int32),
                         "decoder": pl.Series([[float(i), 0.0] for i in range(n)[::-1]], dtype=pl.List(pl.Float32))})


def test_missing_tables_and_empty_partitions_fail_with_one_sentence(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    step = StepInputs(lake, "feature_clusters", MODEL, 2)
    with pytest.raises(dg.Failure) as err:
        step.require("feature_stats")
    assert err.value.description == ("feature_clusters m@x layer 2: no feature_stats rows for partition 2|m@x (there "
                                     "is no feature_stats table); materialize activation_scan first.")
    lake.write_partition("feature_stats", pl.DataFrame({"feature": pl.Series([0], dtype=pl.Int32)}), MODEL, 1)
    with pytest.raises(dg.Failure) as err:
        step.read("feature_stats", or_else="give feature_indices")
    assert err.value.description == ("feature_clusters m@x layer 2: no feature_stats rows for partition 2|m@x; "
                                     "materialize activation_scan first, or give feature_indices.")
    with pytest.raises(dg.Failure, match=re.escape("no feature_stats rows for partition 1|m@x; materialize")):
        StepInputs(lake, "x", MODEL, 1).read("feature_stats", keep=pl.col("feature") > 0)  # no row left
    assert step.optional("feature_labels") is None and step.scan("feature_stats").collect().is_empty()

    report = StepInputs(lake, "alignment_report", MODEL, None)  # a model-level step reads every layer
    with pytest.raises(dg.Failure) as err:
        report.read("alignment_scores")
    assert err.value.description == ("alignment_report m@x: no alignment_scores rows for any layer of m@x (there is "
                                     "no alignment_scores table); materialize alignment_scores first.")
    assert StepInputs(lake, "r", MODEL, None).require("feature_stats") == {"feature_stats": 1}


def test_d_sae_and_the_decoder_come_from_sae_decoder(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    step = StepInputs(lake, "feature_labels", MODEL, 3)
    with pytest.raises(dg.Failure, match=r"no sae_decoder rows .*; materialize sae_decoder first\."):
        step.d_sae()
    lake.write_partition("sae_decoder", _decoder(5), MODEL, 3)
    lake.write_partition("feature_stats", pl.DataFrame({"feature": pl.Series([0, 1], dtype=pl.Int32)}), MODEL, 3)
    assert step.d_sae() == 5  # not feature_stats' row count
    assert step.decoder()["feature"].to_list() == [0, 1, 2, 3, 4]  # by feature
