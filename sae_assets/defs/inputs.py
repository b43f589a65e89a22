"""Reading an asset's input tables in its step, with a ``dg.Failure`` that says what to materialize first (a
damaged table raises the lake's ``LakeReadError``, which names the asset to re-materialize)."""

from __future__ import annotations

import dagster as dg
import polars as pl

from sae_assets.resources.lake import LakeResource


def partition_decoder(lake: LakeResource, model: str, layer: int, where: str) -> pl.DataFrame:
    """The partition's ``sae_decoder`` rows (``feature``, ``decoder``) by feature; fails when there are none."""
    if lake.missing_tables("sae_decoder"):
        raise dg.Failure(f"{where}: the sae_decoder table does not exist; materialize sae_decoder first.")
    decoder = lake.read_partition("sae_decoder", model, layer, ["feature", "decoder"]).sort("feature")
    if decoder.is_empty():
        raise dg.Failure(f"{where}: no sae_decoder rows for this partition; materialize sae_decoder first.")
    return decoder
