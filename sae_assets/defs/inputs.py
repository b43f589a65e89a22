"""An asset step's upstream tables: which partitions it needs, read with one failure when they are not there.

:class:`StepInputs` reads the tables of one model × layer partition (``layer=None``: every layer of a model, for
the model-level reports). A table that does not exist, or holds no rows for the partition, fails the step with one
sentence naming the table, the partition and the asset to materialize (:func:`missing_input`; the writer of a table
is :func:`~sae_assets.storage.read_check.writer_of`'s). A damaged table raises the lake's ``LakeReadError``, which
names the asset to re-materialize. The SAE's width ``d_sae`` is the partition's ``sae_decoder`` row count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl

from sae_assets.resources.lake import LakeResource
from sae_assets.storage.read_check import writer_of


def partition_name(model: str, layer: int | str | None) -> str:
    """``partition <layer>|<model>`` (the partition key's form), or ``any layer of <model>``."""
    return f"partition {layer}|{model}" if layer is not None else f"any layer of {model}"


def missing_input(where: str, table: str, model: str, layer: int | str | None, *, no_table: bool,
                  or_else: str | None = None) -> dg.Failure:
    """The failure of a step whose input ``table`` has no rows for the partition (``no_table``: no table at all):
    ``"<where>: no <table> rows for partition <layer>|<model> (...); materialize <writer> first[, or <or_else>]."``"""
    why = f" (there is no {table} table)" if no_table else ""
    alternative = f", or {or_else}" if or_else else ""
    return dg.Failure(f"{where}: no {table} rows for {partition_name(model, layer)}{why}; materialize "
                      f"{writer_of(table)} first{alternative}.")


@dataclass(frozen=True)
class StepInputs:
    """The upstream tables of step ``step`` for one partition of ``model`` (``layer=None``: all its layers)."""

    lake: LakeResource
    step: str
    model: str
    layer: int | None

    @property
    def where(self) -> str:
        """``<step> <model> layer <layer>`` (or ``<step> <model>``): how the step's messages begin."""
        return f"{self.step} {self.model}" + ("" if self.layer is None else f" layer {self.layer}")

    def missing(self, table: str, *, no_table: bool = False, or_else: str | None = None) -> dg.Failure:
        """:func:`missing_input` for this step and partition."""
        return missing_input(self.where, table, self.model, self.layer, no_table=no_table, or_else=or_else)

    def require(self, *tables: str, or_else: str | None = None) -> dict[str, int]:
        """Each table's row count in the partition; fails, naming the first table that does not exist or has no
        rows there, before any is read."""
        counts: dict[str, int] = {}
        for table in tables:
            if self.lake.missing_tables(table):
                raise self.missing(table, no_table=True, or_else=or_else)
            counts[table] = self.lake.scan_partition(table, self.model, self.layer).select(pl.len()).collect().item()
            if not counts[table]:
                raise self.missing(table, or_else=or_else)
        return counts

    def scan(self, table: str, or_else: str | None = None) -> pl.LazyFrame:
        """The partition's rows of ``table``, lazily; fails when the table does not exist."""
        if self.lake.missing_tables(table):
            raise self.missing(table, no_table=True, or_else=or_else)
        return self.lake.scan_partition(table, self.model, self.layer)

    def read(self, table: str, columns: Sequence[str] | None = None, keep: pl.Expr | None = None,
             or_else: str | None = None) -> pl.DataFrame:
        """The partition's rows of ``table`` (those matching ``keep``; only ``columns``, when given); fails when the
        table does not exist or no row is left."""
        if self.lake.missing_tables(table):
            raise self.missing(table, no_table=True, or_else=or_else)
        rows = self.lake.read_partition(table, self.model, self.layer, None if columns is None else list(columns),
                                        keep)
        if rows.is_empty():
            raise self.missing(table, or_else=or_else)
        return rows

    def optional(self, table: str) -> pl.LazyFrame | None:
        """The partition's rows of ``table``, lazily; None when the table does not exist (an input used where
        materialized)."""
        return None if self.lake.missing_tables(table) else self.lake.scan_partition(table, self.model, self.layer)

    def decoder(self) -> pl.DataFrame:
        """The partition's ``sae_decoder`` rows (``feature``, ``decoder``) by feature; fails when there are none."""
        return self.read("sae_decoder", ["feature", "decoder"]).sort("feature")

    def d_sae(self) -> int:
        """The SAE's width: the partition's ``sae_decoder`` row count (one row per feature); fails when none."""
        return self.require("sae_decoder")["sae_decoder"]
