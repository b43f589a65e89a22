"""Lake maintenance: compact small files, vacuum the files re-materializations left behind, checkpoint the log.

Every write replaces a partition by predicate, so each refresh or backfill leaves the partition's previous files
on disk (referenced only by old versions) and one more commit in ``_delta_log``. :func:`maintain_table` measures a
table (files and bytes of its current version, files on disk, log files), compacts each partition that has more
than one file (``optimize.compact``, one commit per partition), vacuums files removed from the table more than
``retention_hours`` ago, writes a checkpoint and deletes log files older than the table's log retention
(``delta.logRetentionDuration``, 30 days by default), then measures it again. Vacuum runs after compaction, so
the files compaction replaced stay until a later run, like every other removed file, unless the retention is 0.

Retention: Delta refuses to vacuum with less than the table's ``delta.deletedFileRetentionDuration`` (7 days by
default), because readers of an older version and writers still committing may need those files. A shorter one
(down to 0) needs ``allow_short_retention=True``; without it, :class:`RetentionError` is raised before the table
is touched. A compaction commit that conflicts with a writer is retried on the table's new version; one still
conflicting after :data:`~sae_assets.storage.delta.MAX_COMMIT_ATTEMPTS` attempts is reported in
:attr:`MaintenanceResult.conflicts` and changes nothing (a failed compaction commit loses no data: the table
keeps the writer's files). Works on local roots and object stores alike (``storage_options`` as in
:mod:`sae_assets.storage.delta`). Plain Python: no Dagster.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError

from sae_assets.storage import delta

log = logging.getLogger(__name__)

DEFAULT_RETENTION_HOURS = 168
"""Delta's default ``delta.deletedFileRetentionDuration``: 7 days."""
LOG_DIR = "_delta_log"
_UNIT_HOURS = {"second": 1 / 3600, "minute": 1 / 60, "hour": 1.0, "day": 24.0, "week": 168.0}


class RetentionError(ValueError):
    """A vacuum retention below the table's safety minimum, not explicitly allowed."""


@dataclass(frozen=True)
class TableStats:
    """One table at one moment: its version, the files (and bytes) that version reads, and what its directory
    holds (``None`` when the directory was not listed)."""

    version: int
    active_files: int
    active_bytes: int
    disk_files: int | None
    """Data files under the table's directory, ``_delta_log`` excluded: active, removed and orphaned ones."""
    disk_bytes: int | None
    log_files: int | None
    """Files in ``_delta_log``: commits, checkpoints."""


@dataclass(frozen=True)
class MaintenanceResult:
    """What maintenance did to one table: its stats before and after, and each step's count."""

    table: str
    uri: str
    before: TableStats
    after: TableStats
    partitions_compacted: int
    """Partitions whose files compaction rewrote."""
    files_compacted: int
    """Files compaction replaced (they are vacuumed once older than the retention)."""
    files_written: int
    """Files compaction wrote in their place."""
    files_vacuumed: int
    log_files_removed: int | None
    retries: int
    """Compaction commits retried after a conflict with a writer."""
    conflicts: tuple[str, ...]
    """Partitions left uncompacted because a writer kept conflicting (nothing lost; run again later)."""
    seconds: float


def minimum_retention_hours(table: DeltaTable) -> float:
    """The table's ``delta.deletedFileRetentionDuration`` in hours (``interval 7 days`` and the like), below which
    Delta refuses to vacuum; 168 when unset or unreadable."""
    value = table.metadata().configuration.get("delta.deletedFileRetentionDuration") or ""
    match = re.fullmatch(r"\s*(?:interval\s+)?(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?\s*", value.lower())
    return float(match.group(1)) * _UNIT_HOURS[match.group(2)] if match else float(DEFAULT_RETENTION_HOURS)


def check_retention(retention_hours: int, allow_short_retention: bool,
                    minimum_hours: float = DEFAULT_RETENTION_HOURS, where: str = "the lake") -> bool:
    """Whether vacuum must lift Delta's retention check (``retention_hours`` below ``minimum_hours``, allowed);
    :class:`RetentionError` when it is below and not allowed, ``ValueError`` when negative."""
    if retention_hours < 0:
        raise ValueError(f"retention_hours must be >= 0, not {retention_hours}")
    if retention_hours >= minimum_hours:
        return False
    if not allow_short_retention:
        raise RetentionError(
            f"Vacuum retention {retention_hours} h is below Delta's minimum of {minimum_hours:g} h for {where}: "
            "readers of older versions and writers still committing may need those files. Pass "
            "allow_short_retention=True to vacuum with it anyway (only when nothing else reads or writes the lake).")
    return True


def list_tables(root: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """The names of the Delta tables directly under the lake ``root`` (folders with a ``_delta_log``), sorted;
    other folders (SAE weights, exports) are left out, and a root that does not exist has none."""
    fs = delta.table_filesystem(delta.root_uri(root), storage_options)
    entries = fs.get_file_info(pafs.FileSelector("", recursive=False, allow_not_found=True))
    folders = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory)
    if not folders:
        return []
    logs = fs.get_file_info([f"{name}/{LOG_DIR}" for name in folders])
    return [name for name, info in zip(folders, logs, strict=True) if info.type == pafs.FileType.Directory]


def _list_files(uri: str, storage_options: dict[str, str] | None) -> tuple[int, int, int]:
    """(data files, their bytes, log files) under the table's directory."""
    fs = delta.table_filesystem(uri, storage_options)
    data_files = data_bytes = log_files = 0
    for info in fs.get_file_info(pafs.FileSelector("", recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        if info.path.split("/", 1)[0] == LOG_DIR:
            log_files += 1
        else:
            data_files, data_bytes = data_files + 1, data_bytes + (info.size or 0)
    return data_files, data_bytes, log_files


def _count_log_files(uri: str, storage_options: dict[str, str] | None) -> int:
    fs = delta.table_filesystem(uri, storage_options)
    infos = fs.get_file_info(pafs.FileSelector(LOG_DIR, recursive=True, allow_not_found=True))
    return sum(1 for info in infos if info.type == pafs.FileType.File)


def table_stats(table: DeltaTable, uri: str, storage_options: dict[str, str] | None = None,
                list_files: bool = True) -> TableStats:
    """The table's version and active files (from its add actions) and, with ``list_files``, what its directory
    holds (one listing of the directory: a LIST per 1000 objects on an object store)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    active_bytes = sum(actions.column("size_bytes").to_pylist())
    disk: tuple[int | None, int | None, int | None] = (None, None, None)
    if list_files:
        disk = _list_files(uri, storage_options)
    return TableStats(version=table.version(), active_files=actions.num_rows, active_bytes=active_bytes,
                      disk_files=disk[0], disk_bytes=disk[1], log_files=disk[2])


Filters = list[tuple[str, str, str]]


def _partitions_to_compact(table: DeltaTable) -> list[Filters | None]:
    """Partition filters of each partition with more than one active file ([None]: the whole table, when it is
    not partitioned or a partition value is null, and has more than one file)."""
    columns = list(table.metadata().partition_columns)
    actions = pa.table(table.get_add_actions(flatten=True))
    if not columns or not actions.num_rows:
        return [None] if actions.num_rows > 1 else []
    values = list(zip(*(actions.column(f"partition.{c}").to_pylist() for c in columns), strict=True))
    if any(v is None for row in values for v in row):
        return [None] if actions.num_rows > 1 else []
    counts = Counter(values)
    return [[(c, "=", str(v)) for c, v in zip(columns, row, strict=True)]
            for row, n in sorted(counts.items()) if n > 1]


def _is_conflict(err: Exception) -> bool:
    text = str(err).lower()
    return isinstance(err, CommitFailedError) or "conflict" in text or "concurrent" in text


def compact_partition(table: DeltaTable, filters: Filters | None, target_size: int | None = None,
                      max_attempts: int = delta.MAX_COMMIT_ATTEMPTS) -> tuple[dict[str, Any] | None, int]:
    """Compact one partition (``filters``; None: the whole table), retrying on the table's latest version while
    its commit conflicts with a writer: (optimize metrics, or None when it still conflicted, retries)."""
    for attempt in range(1, max_attempts + 1):
        try:
            return table.optimize.compact(partition_filters=filters, target_size=target_size), attempt - 1
        except (DeltaError, OSError) as err:
            if not _is_conflict(err):
                raise
            if attempt == max_attempts:
                log.warning("Compaction of %s %s still conflicts after %d attempts: %s", table.table_uri, filters,
                            attempt, err)
                return None, attempt - 1
            delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
            log.info("Compaction of %s %s conflicted with a writer (%s); retry %d in %.2fs", table.table_uri,
                     filters, err, attempt, delay)
            time.sleep(delay)
            table.update_incremental()  # the writer's version: compaction re-plans on its files
    raise AssertionError("unreachable")


def maintain_table(uri: str, retention_hours: int = DEFAULT_RETENTION_HOURS, allow_short_retention: bool = False,
                   storage_options: dict[str, str] | None = None, full_vacuum: bool = False,
                   target_size: int | None = None, list_files: bool = True) -> MaintenanceResult | None:
    """Compact, vacuum, checkpoint and clean the log of the Delta table at ``uri``; None when there is no table.

    ``full_vacuum`` also deletes data files no commit ever referenced (left by crashed or conflicting writers)
    once older than the retention; the default vacuums only files removed from the table. ``target_size``:
    compacted file size in bytes (default: the table's ``delta.targetFileSize``, else 100 MB)."""
    start = time.perf_counter()
    table = delta.open_table(uri, storage_options)
    if table is None:
        log.info("No Delta table at %s: skipped", uri)
        return None
    lift_check = check_retention(retention_hours, allow_short_retention, minimum_retention_hours(table), uri)
    before = table_stats(table, uri, storage_options, list_files)
    compacted = removed = written = retries = 0
    conflicts: list[str] = []
    for filters in _partitions_to_compact(table):
        metrics, tries = compact_partition(table, filters, target_size)
        retries += tries
        if metrics is None:
            conflicts.append("whole table" if filters is None else ", ".join(f"{c}={v}" for c, _, v in filters))
        elif metrics["numFilesRemoved"]:
            compacted += 1
            removed, written = removed + metrics["numFilesRemoved"], written + metrics["numFilesAdded"]
    vacuumed = table.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=not lift_check,
                            full=full_vacuum)
    table.update_incremental()
    table.create_checkpoint()
    logs_before = _count_log_files(uri, storage_options) if list_files else None
    table.cleanup_metadata()
    after = table_stats(table, uri, storage_options, list_files)
    result = MaintenanceResult(
        table=uri.rstrip("/").rsplit("/", 1)[-1], uri=uri, before=before, after=after, partitions_compacted=compacted,
        files_compacted=removed, files_written=written, files_vacuumed=len(vacuumed),
        log_files_removed=None if logs_before is None or after.log_files is None else logs_before - after.log_files,
        retries=retries, conflicts=tuple(conflicts), seconds=time.perf_counter() - start)
    log.info("Maintained %s: %s -> %s data files on disk, %d compacted in %d partitions, %d vacuumed (%.1f s)",
             uri, before.disk_files, after.disk_files, removed, compacted, len(vacuumed), result.seconds)
    return result


def maintain_lake(root: str, tables: list[str] | None = None, retention_hours: int = DEFAULT_RETENTION_HOURS,
                  allow_short_retention: bool = False, storage_options: dict[str, str] | None = None,
                  full_vacuum: bool = False, target_size: int | None = None,
                  list_files: bool = True) -> list[MaintenanceResult]:
    """:func:`maintain_table` for each of ``tables`` (default: every table under ``root``), in order; named tables
    that do not exist are skipped. The retention is checked against Delta's default minimum before any table is
    touched (and against each table's own before that table is)."""
    check_retention(retention_hours, allow_short_retention)
    root = delta.root_uri(root)
    results = []
    for name in tables if tables is not None else list_tables(root, storage_options):
        result = maintain_table(delta.table_uri(root, name), retention_hours, allow_short_retention, storage_options,
                                full_vacuum, target_size, list_files)
        if result is not None:
            results.append(result)
    return results
