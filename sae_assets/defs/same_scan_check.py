"""``same_scan``: the four tables activation_scan writes for a partition come from one scan (blocking).

One check step runs after every scan, reads only the ``scan_id`` column of each table's partition, once, and
gives a result on each of the four assets. When a scan died between two of its table commits, the tables hold
two scans' rows; the check fails on all four (so nothing downstream of any of them runs on the mix) until the
partition is scanned again, which rewrites all four with one id.
"""

from collections.abc import Iterator

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


SAME_SCAN = "same_scan"


@dg.multi_asset_check(
    name=SAME_SCAN,
    specs=[dg.AssetCheckSpec(SAME_SCAN, asset=table, blocking=True, partitions_def=model_layer_partitions,
                             description=f"{', '.join(SCAN_TABLES)} of this partition all come from one "
                             "activation_scan (one scan_id); blocking: a scan that died between its table writes "
                             "stops what reads them until activation_scan is re-run for the partition.")
           for table in SCAN_TABLES],
)
def same_scan(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> Iterator[dg.AssetCheckResult]:
    """One reading of the four tables' scan ids, one result on each table."""
    model, layer = model_and_layer(context.partition_key)
    found = scan_agreement(lake, model, layer)
    problem = found.problem()
    metadata = {f"{table}_scan_id": ", ".join(ids) if ids else ("none" if ids is None else "before scan ids")
                for table, ids in found.ids.items()}
    if problem:
        context.log.warning("%s layer %s: %s. Re-materialize activation_scan for this partition.", model, layer,
                            problem)
    for table in SCAN_TABLES:
        yield dg.AssetCheckResult(
            asset_key=table, check_name=SAME_SCAN, passed=problem is None, metadata=metadata,
            description=None if problem is None else f"{problem}; re-materialize activation_scan for this partition")
