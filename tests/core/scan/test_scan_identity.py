"""Scan ids: appended to record batches, and the agreement of a partition's four tables."""

from __future__ import annotations

import pyarrow as pa

from sae_assets.core.scan.scan_identity import SCAN_ID, SCAN_TABLES, agreement, with_scan_id, with_scan_id_schema


def test_batches_gain_the_scan_id_column_in_the_schema_order() -> None:
    schema = pa.schema([("feature", pa.int32())])
    batches = [pa.record_batch([pa.array([0, 1], pa.int32())], schema=schema),
               pa.record_batch([pa.array([2], pa.int32())], schema=schema)]
    out = list(with_scan_id(batches, "abc"))
    assert [b.schema for b in out] == [with_scan_id_schema(schema)] * 2
    assert [b.column(SCAN_ID).to_pylist() for b in out] == [["abc", "abc"], ["abc"]]


def test_four_tables_of_one_scan_agree() -> None:
    found = agreement(dict.fromkeys(SCAN_TABLES, ["s1"]))
    assert found.scan_id == "s1" and found.problem() is None


def test_a_scan_that_died_between_writes_is_named_with_its_tables() -> None:
    found = agreement({"feature_stats": ["new"], "activation_examples": ["new"], "feature_profiles": ["old"],
                       "cooccurrence": ["old"]})
    assert found.scan_id is None
    assert found.problem() == ("the tables come from 2 scans (feature_stats, activation_examples from scan new; "
                               "feature_profiles, cooccurrence from scan old): a scan stopped between its writes")


def test_missing_tables_old_rows_and_mixed_tables_each_fail_with_a_reason() -> None:
    ids: dict = dict.fromkeys(SCAN_TABLES, ["s1"])
    assert agreement({**ids, "cooccurrence": None}).problem() == "no rows in cooccurrence for this partition"
    assert "feature_profiles predate scan ids" in agreement({**ids, "feature_profiles": [None]}).problem()
    assert "feature_stats hold rows of several scans" in agreement({**ids, "feature_stats": ["s1", "s2"]}).problem()
