"""``lake_maintenance``: compact, vacuum and checkpoint the lake's Delta tables, weekly by default.

Every re-materialization replaces a partition and leaves its previous files and one more log entry, so refreshes
and backfills grow the lake without bound. The job runs :func:`sae_assets.storage.maintenance.maintain_table` on
every table under the ``lake`` resource's root (or the tables named in its config), logs each table as it goes,
and reports files and bytes before and after as the op's output metadata (a Markdown table per table, and
totals). A table that fails or whose compaction keeps conflicting with writers does not stop the others; the run
fails at the end naming it, with the same metadata. The ``lake_maintenance`` schedule runs it weekly
(``SAE_ASSETS_LAKE_MAINTENANCE_CRON``, default Sundays 04:00 UTC) with the default config: files removed from
their table more than 7 days (168 h) ago are deleted. A shorter retention needs ``allow_short_retention``.
"""

# No `from __future__ import annotations`: Dagster reads the op's annotations (its config class) at decoration.
from dataclasses import asdict
from typing import Any

import dagster as dg
from pydantic import Field

from sae_assets import settings
from sae_assets.defs.automation import schedule_status
from sae_assets.resources.lake import LakeResource
from sae_assets.storage import maintenance
from sae_assets.storage.maintenance import MaintenanceResult


class LakeMaintenanceConfig(dg.Config):
    """Run config of the ``maintain_lake`` op."""

    retention_hours: int = Field(
        default=maintenance.DEFAULT_RETENTION_HOURS,
        description="Vacuum deletes files removed from their table more than this many hours ago. Below Delta's "
        "minimum (the table's delta.deletedFileRetentionDuration, 168 h by default) only with "
        "allow_short_retention.")
    allow_short_retention: bool = Field(
        default=False,
        description="Allow a retention below Delta's minimum (e.g. 0): readers of older versions and writers "
        "committing at the same time may lose the files they need. Only when nothing else uses the lake.")
    tables: list[str] | None = Field(
        default=None, description="Table (asset) names to maintain; default: every Delta table under the lake root.")
    full_vacuum: bool = Field(
        default=False,
        description="Also delete data files no commit references (left by crashed writers or conflicting "
        "compactions) once older than the retention; the default deletes only files removed from the table.")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _markdown(results: list[MaintenanceResult], failed: dict[str, str]) -> str:
    rows = ["| table | version | active files | files on disk | bytes on disk | compacted | vacuumed | seconds |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        b, a = r.before, r.after
        rows.append(f"| `{r.table}` | {b.version} → {a.version} | {b.active_files} → {a.active_files} | "
                    f"{b.disk_files} → {a.disk_files} | {_size(b.disk_bytes)} → {_size(a.disk_bytes)} | "
                    f"{r.files_compacted} in {r.partitions_compacted} partitions | {r.files_vacuumed} | "
                    f"{r.seconds:.1f} |")
    rows += [f"| `{name}` | failed: {reason[:200].replace('|', '/')} | | | | | | |"
             for name, reason in failed.items()]
    return "\n".join(rows)


def maintenance_metadata(results: list[MaintenanceResult], failed: dict[str, str]) -> dict[str, dg.MetadataValue]:
    """Totals over the tables (data files and bytes on disk before/after, files vacuumed), a Markdown table with
    a row per table, and every table's result as JSON."""

    def total(attr: str, when: str) -> int:
        return sum(getattr(getattr(r, when), attr) or 0 for r in results)

    meta: dict[str, dg.MetadataValue] = {
        "tables": dg.MetadataValue.int(len(results)),
        "files_before": dg.MetadataValue.int(total("disk_files", "before")),
        "files_after": dg.MetadataValue.int(total("disk_files", "after")),
        "bytes_before": dg.MetadataValue.int(total("disk_bytes", "before")),
        "bytes_after": dg.MetadataValue.int(total("disk_bytes", "after")),
        "active_files_after": dg.MetadataValue.int(total("active_files", "after")),
        "files_vacuumed": dg.MetadataValue.int(sum(r.files_vacuumed for r in results)),
        "files_compacted": dg.MetadataValue.int(sum(r.files_compacted for r in results)),
        "summary": dg.MetadataValue.md(_markdown(results, failed)),
        "per_table": dg.MetadataValue.json([asdict(r) for r in results]),
    }
    if failed:
        meta["failed_tables"] = dg.MetadataValue.json(failed)
    return meta


@dg.op(description="Compact, vacuum and checkpoint every Delta table under the lake root (or the configured "
       "ones); files and bytes before/after as output metadata.")
def maintain_lake(context: dg.OpExecutionContext, config: LakeMaintenanceConfig,
                  lake: LakeResource) -> dg.Output[list[dict[str, Any]]]:
    options = lake.storage_options or None
    try:  # refuse a short retention before any table is touched
        maintenance.check_retention(config.retention_hours, config.allow_short_retention)
    except ValueError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err
    names = config.tables if config.tables is not None else maintenance.list_tables(lake.root_uri, options)
    context.log.info("Maintaining %d table(s) under %s (retention %d h%s)", len(names), lake.root_uri,
                     config.retention_hours, ", full vacuum" if config.full_vacuum else "")
    results: list[MaintenanceResult] = []
    failed: dict[str, str] = {}
    for i, name in enumerate(names, 1):
        context.log.info("[%d/%d] %s", i, len(names), name)
        try:
            result = maintenance.maintain_table(
                lake.table_uri(name), config.retention_hours, config.allow_short_retention, options,
                full_vacuum=config.full_vacuum)
        except Exception as err:  # one table's failure must not stop the others; the run fails below
            context.log.error("[%d/%d] %s failed: %s", i, len(names), name, err)
            failed[name] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            continue
        if result is None:
            context.log.warning("[%d/%d] %s: no Delta table at %s, skipped", i, len(names), name,
                                lake.table_uri(name))
            continue
        results.append(result)
        b, a = result.before, result.after
        context.log.info("[%d/%d] %s: data files on disk %s -> %s (%s -> %s), active %d -> %d, %d compacted, "
                         "%d vacuumed, %.1f s", i, len(names), name, b.disk_files, a.disk_files, _size(b.disk_bytes),
                         _size(a.disk_bytes), b.active_files, a.active_files, result.files_compacted,
                         result.files_vacuumed, result.seconds)
        if result.conflicts:
            failed[name] = ("compaction kept conflicting with writers (nothing lost; run again) in "
                            + "; ".join(result.conflicts))
            context.log.warning("[%d/%d] %s: %s", i, len(names), name, failed[name])
    metadata = maintenance_metadata(results, failed)
    if failed:
        raise dg.Failure(description=f"Lake maintenance failed for {len(failed)} table(s): "
                         + "; ".join(f"{n}: {why}" for n, why in failed.items()), metadata=metadata)
    return dg.Output([asdict(r) for r in results], metadata=metadata)


@dg.job(name="lake_maintenance", description="Compact small files, vacuum files older than the retention (168 h by "
        "default), checkpoint the log: every Delta table under the lake root, or those in the run config.")
def lake_maintenance_job() -> None:
    maintain_lake()


lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance",
    cron_schedule=settings.lake_maintenance_cron(),  # default: Sundays 04:00 UTC
    job=lake_maintenance_job,
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Weekly (SAE_ASSETS_LAKE_MAINTENANCE_CRON): lake_maintenance with its default config "
    "(every table, 168 h retention).",
)
