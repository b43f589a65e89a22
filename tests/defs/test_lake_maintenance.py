"""The lake_maintenance job run in process against a temporary lake (metadata, refusals, a broken table), and its
weekly schedule in the code location."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from sae_assets import settings
from sae_assets.definitions import defs
from sae_assets.defs.lake_maintenance import lake_maintenance_job, lake_maintenance_schedule
from sae_assets.resources.lake import LakeResource


def _lake(lake_root: str) -> LakeResource:
    lake = LakeResource(root=lake_root)
    rng = np.random.default_rng(0)
    for name, rewrites in (("feature_stats", 5), ("feature_labels", 2)):
        for _ in range(rewrites):
            lake.write_partition(name, pl.DataFrame({"feature": pl.Series(range(20), dtype=pl.Int32),
                                                     "value": rng.normal(size=20)}), "m@a", 1)
        lake.write_partition(name, pl.DataFrame({"feature": pl.Series([0], dtype=pl.Int32), "value": [1.0]}),
                             "m@b", 3)
    lake.local_dir("exports", "feature_map")  # not a table
    return lake


def _run(lake: LakeResource, **config: object) -> dg.ExecuteInProcessResult:
    return lake_maintenance_job.execute_in_process(
        resources={"lake": lake}, run_config={"ops": {"maintain_lake": {"config": config}}}, raise_on_error=False)


def _output_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.events_for_node("maintain_lake") if e.is_successful_output]
    return event.step_output_data.metadata


def _data_files(lake_root: str) -> int:
    return sum(1 for p in Path(lake_root).rglob("*.parquet") if "_delta_log" not in p.parts)


def test_the_job_vacuums_every_table_and_reports_files_before_and_after(lake_root: str,
                                                                        capsys: pytest.CaptureFixture) -> None:
    lake = _lake(lake_root)
    before = {name: lake.scan_partition(name, "m@a", 1).collect() for name in ("feature_stats", "feature_labels")}
    assert _data_files(lake_root) == 9

    result = _run(lake, retention_hours=0, allow_short_retention=True)

    assert result.success
    meta = _output_metadata(result)
    assert (meta["tables"].value, meta["files_before"].value, meta["files_after"].value) == (2, 9, 4)
    assert meta["files_vacuumed"].value == 5 and meta["active_files_after"].value == 4
    assert meta["bytes_after"].value < meta["bytes_before"].value
    summary = meta["summary"].value
    assert "| `feature_labels` |" in summary and "| `feature_stats` | 5 → " in summary and "3 → 2" in summary
    per_table = {row["table"]: row for row in meta["per_table"].value}
    assert per_table["feature_stats"]["before"]["disk_files"] == 6 and per_table["feature_stats"]["after"][
        "disk_files"] == 2
    assert [row["table"] for row in result.output_for_node("maintain_lake")] == ["feature_labels", "feature_stats"]
    assert _data_files(lake_root) == 4
    for name, frame in before.items():
        assert lake.scan_partition(name, "m@a", 1).collect().equals(frame)
    assert "[2/2] feature_stats: data files on disk 6 -> 2 (" in capsys.readouterr().err  # progress per table


def test_the_default_config_keeps_recent_files_and_a_short_retention_needs_the_flag(lake_root: str) -> None:
    lake = _lake(lake_root)
    refused = _run(lake, retention_hours=0)
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    assert "allow_short_retention=True" in failure.step_failure_data.error.message
    assert _data_files(lake_root) == 9

    kept = lake_maintenance_job.execute_in_process(resources={"lake": lake})  # the schedule's config: 168 h
    assert kept.success and _output_metadata(kept)["files_vacuumed"].value == 0 and _data_files(lake_root) == 9


def test_named_tables_only_and_a_broken_table_fails_the_run_after_the_others(lake_root: str) -> None:
    lake = _lake(lake_root)
    only = _run(lake, retention_hours=0, allow_short_retention=True, tables=["feature_stats", "missing"])
    assert only.success and [r["table"] for r in only.output_for_node("maintain_lake")] == ["feature_stats"]
    assert _data_files(lake_root) == 2 + 3  # feature_labels untouched

    broken = Path(lake_root) / "broken" / "_delta_log"
    broken.mkdir(parents=True)
    (broken / "00000000000000000000.json").write_text("not json\n")
    result = _run(lake, retention_hours=0, allow_short_retention=True)
    assert not result.success and _data_files(lake_root) == 4  # the other tables were maintained
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert "Lake maintenance failed for 1 table(s): broken: DeltaError" in data.error.message
    assert "| `broken` | failed: DeltaError" in data.user_failure_data.metadata["summary"].value
    assert data.user_failure_data.metadata["tables"].value == 2


def test_the_weekly_schedule_is_in_the_code_location(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def("lake_maintenance")
    assert schedule.cron_schedule == "0 4 * * 0" and schedule.execution_timezone == "UTC"  # Sundays 04:00 UTC
    assert schedule.job_name == "lake_maintenance" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = repo.get_job("lake_maintenance")
    assert [node.name for node in job.nodes] == ["maintain_lake"] and "lake" in job.resource_defs
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 22, 4, tzinfo=UTC))
    [request] = lake_maintenance_schedule.evaluate_tick(context).run_requests or []
    assert request.run_config == {}  # the job's defaults: every table, 168 h
    monkeypatch.setenv(settings.LAKE_MAINTENANCE_CRON, "0 2 * * 6")
    assert settings.lake_maintenance_cron() == "0 2 * * 6"
