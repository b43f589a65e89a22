"""One scan, four tables: every row the scan writes carries the scan's id, so a reader can tell a partition
whose tables all come from one pass from one a crash left half-replaced.

The scan writes ``feature_stats``, ``activation_examples``, ``feature_profiles`` and ``cooccurrence`` one
commit after another; Delta makes each commit atomic, not the four together. A process that dies between two
commits leaves some tables from the new scan and the rest from the previous one. Each row holds ``scan_id``
(a fresh id per execution, not per run: a retried step is a new scan), and :func:`agreement` says whether the
four tables of a partition hold one id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa

SCAN_ID = "scan_id"
SCAN_TABLES = ("feature_stats", "activation_examples", "feature_profiles", "cooccurrence")
"""The scan's tables, in the order it writes them."""


def new_scan_id() -> str:
    return uuid.uuid4().hex


def with_scan_id(batches: Iterable[pa.RecordBatch], scan_id: str) -> Iterator[pa.RecordBatch]:
    """Each batch with a ``scan_id`` column appended (the same id in every row)."""
    for batch in batches:
        yield batch.append_column(SCAN_ID, pa.array([scan_id] * batch.num_rows, pa.string()))


def with_scan_id_schema(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(SCAN_ID, pa.string()))


@dataclass(frozen=True)
class ScanAgreement:
    ids: Mapping[str, tuple[str, ...] | None]
    """Per scan table, the distinct scan ids in the partition: ``None`` when the table or the partition is missing,
    ``()`` when its rows predate scan ids (a lake written before the column existed)."""

    @property
    def scan_id(self) -> str | None:
        """The one scan every table comes from, or None when they do not agree."""
        values = set(self.ids.values())
        if len(values) != 1:
            return None
        (only,) = values
        return only[0] if only is not None and len(only) == 1 else None

    def problem(self) -> str | None:
        """What is wrong, in words, or None when the four tables hold one scan."""
        if self.scan_id is not None:
            return None
        missing = [t for t, ids in self.ids.items() if ids is None]
        if missing:
            return f"no rows in {', '.join(missing)} for this partition"
        unknown = [t for t, ids in self.ids.items() if ids == ()]
        if unknown:
            return f"{', '.join(unknown)} predate scan ids, so the tables cannot be matched"
        mixed = [t for t, ids in self.ids.items() if ids is not None and len(ids) > 1]
        if mixed:
            return f"{', '.join(mixed)} hold rows of several scans"
        by_scan: dict[str, list[str]] = {}
        for table, ids in self.ids.items():
            by_scan.setdefault((ids or ("?",))[0], []).append(table)
        parts = [f"{', '.join(tables)} from scan {scan[:12]}" for scan, tables in by_scan.items()]
        return f"the tables come from {len(by_scan)} scans ({'; '.join(parts)}): a scan stopped between its writes"


def agreement(ids: Mapping[str, Iterable[str | None] | None]) -> ScanAgreement:
    """From each table's scan-id values in the partition (None: no table or no rows), null ids dropped."""
    return ScanAgreement({table: None if values is None else tuple(sorted({v for v in values if v is not None}))
                          for table, values in ids.items()})
