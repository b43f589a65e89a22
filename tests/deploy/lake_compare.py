"""Two lakes hold the same data: every table, rows in any order, floats to 1e-6."""

from __future__ import annotations

import numpy as np
import polars as pl

from sae_assets.storage.delta import table_uri
from sae_assets.storage.delta import table_version as delta_version
from sae_assets.storage.maintenance import list_tables

# Columns that say when or by which run a row was written, not what it holds.
NOT_DATA = {"run_id", "scan_id", "materialized_at", "written_at", "created_at", "seconds"}
TOLERANCE = 1e-6


def table_version(root: str, table: str, options: dict[str, str]) -> int | None:
    return delta_version(table_uri(root, table), options or None)


def lake_tables(root: str, options: dict[str, str]) -> list[str]:
    return list_tables(root, options or None)


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.drop([c for c in frame.columns if c in NOT_DATA])
    return frame.select(sorted(frame.columns))


def _sort_keys(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if not t.is_float() and not t.is_nested() and t != pl.Binary]


def frame_differences(table: str, a: pl.DataFrame, b: pl.DataFrame) -> list[str]:
    """What differs between two versions of ``table``'s rows (none: equal)."""
    a, b = _canonical(a), _canonical(b)
    if a.columns != b.columns or a.height != b.height:
        return [f"{table}: shape {a.shape} vs {b.shape}, columns {a.columns} vs {b.columns}"]
    keys = _sort_keys(a)
    if keys:
        a, b = a.sort(keys, nulls_last=True), b.sort(keys, nulls_last=True)
    differences = []
    for column in a.columns:
        x, y = a[column], b[column]
        while x.dtype.is_nested():
            x, y = x.explode(), y.explode()
        if x.dtype.is_float():
            xs, ys = x.to_numpy(), y.to_numpy()
            if xs.shape != ys.shape or not np.allclose(xs, ys, atol=TOLERANCE, rtol=TOLERANCE, equal_nan=True):
                gap = float(np.nanmax(np.abs(xs - ys))) if xs.shape == ys.shape else float("nan")
                differences.append(f"{table}.{column}: floats differ by up to {gap:.3g}")
        elif x.to_list() != y.to_list():
            differences.append(f"{table}.{column}: values differ")
    return differences


def assert_lakes_equal(a_root: str, a_options: dict[str, str], b_root: str, b_options: dict[str, str],
                       tables: tuple[str, ...] | None = None) -> None:
    names = tables or tuple(lake_tables(a_root, a_options))
    assert tables or set(names) == set(lake_tables(b_root, b_options))
    differences = []
    for name in names:
        a = pl.read_delta(table_uri(a_root, name), storage_options=a_options or None)
        b = pl.read_delta(table_uri(b_root, name), storage_options=b_options or None)
        differences += frame_differences(name, a, b)
    assert not differences, "\n".join(differences)
