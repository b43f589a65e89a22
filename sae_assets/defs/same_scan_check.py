"""``same_scan``: the four tables activation_scan writes for a partition come from one scan (blocking).

The check runs after every scan, on each of its four assets, and reads only the ``scan_id`` column of each
table's partition. When a scan died between two of its table commits, the tables hold two scans' rows; the
check fails on all four (so nothing downstream of any of them runs on the mix) until the partition is scanned
again, which rewrites all four with one id.
"""

import dagster as dg
import polars as pl

from sae_assets.core.scan.scan_identity import SCAN_ID, SCAN_TABLES, ScanAgreement, agreement
from sae_assets.defs.partitions import model_and_layer, model_layer_partitions
from sae_assets.resources.lake import LakeResource


def scan_agreement(lake: LakeResource, model: str, layer: int | str) -> ScanAgreement:
    """Each scan table's distinct scan ids in the partition (None where the table or partition is missing)."""
    ids: dict[str, list[str | None] | None] = {}
    for table in SCAN_TABLES:
        if lake.missing_tables(table):
            ids[table] = None
            continue
        frame = lake.scan_partition(table, model, layer)
        if SCAN_ID not in frame.collect_schema().names():  # a table from before scan ids
            rows = frame.select(pl.len()).collect().item()
            ids[table] = [] if rows else None
            continue
        values = frame.select(pl.col(SCAN_ID).unique(), pl.len().alias("rows")).collect()
        ids[table] = values[SCAN_ID].to_list() if values.height and values["rows"][0] else None
    return agreement(ids)


def same_scan_check(asset: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="same_scan", blocking=True, partitions_def=model_layer_partitions,
                    description=f"{', '.join(SCAN_TABLES)} of this partition all come from one activation_scan "
                    "(one scan_id); blocking: a scan that died between its table writes stops what reads them until "
                    "activation_scan is re-run for the partition.")
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        model, layer = model_and_layer(context.partition_key)
        found = scan_agreement(lake, model, layer)
        problem = found.problem()
        metadata = {f"{table}_scan_id": ", ".join(ids) if ids else ("none" if ids is None else "before scan ids")
                    for table, ids in found.ids.items()}
        if problem:
            context.log.warning("%s layer %s: %s. Re-materialize activation_scan for this partition.", model, layer,
                                problem)
        return dg.AssetCheckResult(
            passed=problem is None, metadata=metadata,
            description=None if problem is None else f"{problem}; re-materialize activation_scan for this partition")

    return _check


@dg.definitions
def same_scan_definitions() -> dg.Definitions:
    return dg.Definitions(asset_checks=[same_scan_check(table) for table in SCAN_TABLES])
