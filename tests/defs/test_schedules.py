"""weekly_explanations_refresh with build_schedule_context; the named automation conditions on the assets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from sae_assets.definitions import defs
from sae_assets.defs.partitions import MODEL_PARTITIONS_NAME, partition_key, register_models
from sae_assets.defs.resources import default_resources
from sae_assets.defs.schedules import weekly_explanations_refresh

MODEL = "smollm2-135m@test-res"


def _tick(instance: dg.DagsterInstance):
    context = dg.build_schedule_context(instance=instance,
                                        scheduled_execution_time=datetime(2026, 11, 23, 3, tzinfo=UTC))
    return weekly_explanations_refresh(context)


def test_refreshes_only_materialized_partitions(test_catalog: Path, capsys) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        skip = _tick(instance)
        assert isinstance(skip, dg.SkipReason) and "No explanations partition has been materialized" in \
            skip.skip_message
        for layer in (1, 3):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                "explanations", partition=partition_key(MODEL, layer)))
        instance.add_dynamic_partitions(MODEL_PARTITIONS_NAME, ["gone@model"])
        instance.report_runless_asset_event(dg.AssetMaterialization("explanations", partition=partition_key(
            "gone@model", 0)))
        instance.delete_dynamic_partition(MODEL_PARTITIONS_NAME, "gone@model")
        requests = _tick(instance)
        assert [str(r.partition_key) for r in requests] == [f"1|{MODEL}", f"3|{MODEL}"]
        assert {r.tags["sae_assets/refresh"] for r in requests} == {"2026-11-23T03:00:00+00:00"}
        assert len({r.run_key for r in requests}) == 2
        assert "no longer a partition: 0|gone@model" in capsys.readouterr().err


def test_refresh_job_and_automation_conditions() -> None:
    job = defs.resolve_job_def("refresh_explanations")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {  # not the LLM labels
        "neuronpedia_explanations", "explanations", "explanation_embeddings", "alignment_scores", "feature_map"}
    assert weekly_explanations_refresh.cron_schedule == "0 3 * * 1"
    assert weekly_explanations_refresh.default_status == dg.DefaultScheduleStatus.RUNNING
    labels = {spec.key.to_user_string(): spec.automation_condition.get_label() if spec.automation_condition else None
              for spec in defs.resolve_all_asset_specs()}
    assert labels["trained_sae"] is None and labels["sae_decoder"] is None  # started by new_sae_sensor / users
    assert labels["neuronpedia_explanations"] is None  # by the jobs and the weekly schedule
    assert {labels[k] for k in ("feature_stats", "cooccurrence", "feature_labels", "optimized_prompts",
                                "logit_effects")} == {"on_new_inputs"}  # GPU work: never re-run only for code
    assert {labels[k] for k in ("feature_clusters", "explanation_embeddings", "alignment_scores", "feature_map")} == {
        "cheap_refresh"}
    assert labels["alignment_report"] == "report_refresh"
    sensors = {s.name: s for s in defs.sensors}
    assert sensors["default_automation_condition_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["new_sae_sensor"].default_status == dg.DefaultSensorStatus.RUNNING


def _bump_code_versions(assets_defs: list, names: set[str]) -> list:
    return [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version="2")
                              if spec.key.to_user_string() in names else spec) for a in assets_defs]


REPORTS = ("alignment_report", "sae_eval_report")
"""The model-level reports: automation runs them once the layers' assets settle."""


def test_automation_runs_downstream_of_a_new_sae_and_code_changes_only_cheap_assets(test_catalog: Path) -> None:
    key = partition_key(MODEL, 1)
    specs = list(defs.resolve_all_asset_specs())

    def definitions(bump: set[str] = frozenset()) -> dg.Definitions:
        # The defs-folder loader meets an asset once per module that imports it: one copy each here.
        unique = list({id(a): a for a in defs.assets or []}.values())
        return dg.Definitions(assets=_bump_code_versions(unique, bump), resources=default_resources())

    def requested(result) -> set[str]:
        return {s.key.to_user_string() for s in specs if str(key) in result.get_requested_partitions(s.key)}

    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        first = dg.evaluate_automation_conditions(defs=definitions(), instance=instance)
        assert requested(first) == set()  # nothing upstream yet
        instance.report_runless_asset_event(dg.AssetMaterialization("sae_decoder", partition=key))
        second = dg.evaluate_automation_conditions(defs=definitions(), instance=instance, cursor=first.cursor)
        downstream = {s.key.to_user_string() for s in specs} - {"trained_sae", "sae_decoder",
                                                                "neuronpedia_explanations", *REPORTS}
        assert requested(second) == downstream  # the chain below a new decoder, in one request, not waiting for
        # Neuronpedia's explanations (an optional input: the demo's models have none)

        everything = [s.key for s in specs if s.key.to_user_string() not in REPORTS]
        for asset_key in everything:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key, partition=key))
        report = dg.evaluate_automation_conditions(defs=definitions(), instance=instance, cursor=second.cursor)
        for name in REPORTS:  # model-level: requested although layers 0, 2.. are missing
            assert report.get_requested_partitions(dg.AssetKey(name)) == {MODEL}, name
            instance.report_runless_asset_event(dg.AssetMaterialization(name, partition=MODEL))
        settled = dg.evaluate_automation_conditions(defs=definitions(), instance=instance, cursor=report.cursor)
        assert requested(settled) == set()
        instance.report_runless_asset_event(dg.AssetMaterialization("neuronpedia_explanations", partition=key))
        refreshed = dg.evaluate_automation_conditions(defs=definitions(), instance=instance, cursor=settled.cursor)
        assert requested(refreshed) == set()  # new Neuronpedia explanations re-run no labels (refresh job's work)
        settled = refreshed

        bumped = definitions({"feature_stats", "feature_labels", "feature_map", "alignment_scores"})
        changed = dg.evaluate_automation_conditions(defs=bumped, instance=instance, cursor=settled.cursor)
        assert requested(changed) == {"feature_map", "alignment_scores"}  # the GPU assets wait for a person
