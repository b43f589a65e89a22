"""sae_evals and sae_eval_report on real partitions: a trained SAE at its own hook, the same SAE at another
layer's hook (a mismatched SAE scores clearly worse), the CE loss score floor, and a hook the model lacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sae_assets.defs.assets.sae_eval_report import sae_eval_report
from sae_assets.defs.assets.sae_evals import sae_evals
from sae_assets.defs.checks import build_checks
from sae_assets.defs.partitions import register_models
from sae_assets.resources.sae_source import trained_sae_dir
from tests.conftest import TEST_CATALOG
from tests.defs.helpers import TINY_EVALS, failure_text, lake_tables, materialize, resources

MODEL = "smollm2-135m@test-res"
MISMATCHED = "smollm2-135m@mismatched"
EVALS = TINY_EVALS
MISMATCHED_ENTRY = """
  smollm2-135m@mismatched:
    language_model: *smollm2
    hook: blocks.{layer}.hook_resid_post
    d_model: 576
    layers: [3]
    sae: {source: local, path: "%(mismatch_dir)s/layer-{layer}"}
"""


def _eval_checks() -> list[dg.AssetChecksDefinition]:
    return [c for c in build_checks() if {k.asset_key for k in c.check_keys} == {sae_evals.key}]


def _evaluate(instance: dg.DagsterInstance, lake_root: str, model: str, layer: int) -> dg.ExecuteInProcessResult:
    return materialize(instance, lake_root, model, layer, assets=(sae_evals, *_eval_checks()),
                       extra_ops={"sae_evals": {"config": EVALS}})


@pytest.mark.slow
def test_evals_of_a_trained_sae_and_of_the_same_sae_at_the_wrong_layer(
        test_catalog: Path, lake_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        assert materialize(instance, lake_root, MODEL, 1).success  # trained_sae, sae_decoder
        mismatch_dir = tmp_path / "mismatched"
        shutil.copytree(trained_sae_dir(Path(lake_root), MODEL, 1), mismatch_dir / "layer-3")
        test_catalog.write_text(TEST_CATALOG % {"sae_dir": tmp_path / "local_saes"}
                                + MISMATCHED_ENTRY % {"mismatch_dir": mismatch_dir})
        register_models(instance, [MISMATCHED])
        # The tiny test SAE keeps about half of the loss; the floor is read when the check runs.
        monkeypatch.setenv("SAE_ASSETS_MIN_CE_LOSS_SCORE", "0.2")
        right = _evaluate(instance, lake_root, MODEL, 1)
        assert right.success, failure_text(right)
        monkeypatch.setenv("SAE_ASSETS_MIN_CE_LOSS_SCORE", "0.99")
        wrong = _evaluate(instance, lake_root, MISMATCHED, 3)
        assert wrong.success, failure_text(wrong)

        table = pl.read_delta(f"{lake_root}/sae_evals")
        by_model = {row["model"]: row for row in table.iter_rows(named=True)}
        good, bad = by_model[MODEL], by_model[MISMATCHED]
        assert good["hook_name"] == "blocks.1.hook_resid_post" and bad["hook_name"] == "blocks.3.hook_resid_post"
        assert good["d_sae"] == 256 and good["n_contexts"] == 8 and good["held_out_from_document"] >= 200
        assert 0 < good["n_tokens"] < 512  # BOS and the document separators are not evaluated
        assert good["ce_loss_without_sae"] == pytest.approx(3.0, abs=1.5)  # the same held-out tokens for both
        assert good["ce_loss_score"] > 0.2 and good["ce_loss_score"] > bad["ce_loss_score"]
        assert good["delta_lm_loss"] < bad["delta_lm_loss"]
        assert good["explained_variance"] > bad["explained_variance"] + 0.1
        assert sum(good["density_histogram"]) == round(256 * (1 - good["dead_fraction"]))

        checks = {(e.asset_key.to_user_string(), e.check_name): e.passed
                  for e in right.get_asset_check_evaluations()}
        assert checks == {("sae_evals", "finite_evals"): True, ("sae_evals", "ce_loss_score_floor"): True}
        floor = next(e for e in wrong.get_asset_check_evaluations() if e.check_name == "ce_loss_score_floor")
        assert not floor.passed and "below the floor 0.99" in (floor.description or "")

        for model in (MODEL, MISMATCHED):
            report = dg.materialize([sae_eval_report], partition_key=model, instance=instance,
                                    resources=resources(lake_root))
            assert report.success
        reports = pl.read_delta(f"{lake_root}/sae_eval_report")
        assert reports.filter(pl.col("model") == MISMATCHED)["below_floor"].to_list() == [True]
        meta = report.asset_materializations_for_node("sae_eval_report")[0].metadata
        assert "layer 3" in meta["below_floor"].value
        assert {"ce_loss_score_vs_l0", "delta_lm_loss_vs_l0", "density_histograms"} <= set(meta)


@pytest.mark.slow
def test_a_hook_the_model_lacks_fails_and_writes_nothing(test_catalog: Path, lake_root: str, tmp_path: Path) -> None:
    from tests.builders import save_topk_sae

    save_topk_sae(tmp_path / "local_saes" / "bad-hook-1", d_in=576, d_sae=64, k=4, hook_name="blocks.1.hook_nope")
    with dg.instance_for_test() as instance:
        register_models(instance, ["smollm2-135m@bad-hook"])
        result = materialize(instance, lake_root, "smollm2-135m@bad-hook", 1, assets=(sae_evals,),
                             extra_ops={"sae_evals": {"config": EVALS}})
        assert not result.success
        assert "hook_nope" in failure_text(result) and "sae_evals" in failure_text(result)
        assert "sae_evals" not in lake_tables(lake_root)
