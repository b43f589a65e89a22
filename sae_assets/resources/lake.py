"""The Delta lake root: a local path or any deltalake URI (s3://, gs://, az://) with storage options."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
from deltalake.exceptions import DeltaError
from pydantic import Field

from sae_assets import settings
from sae_assets.storage import delta, read_check
from sae_assets.storage.read_check import LakeReadError

__all__ = ["LakeReadError", "LakeResource"]


class LakeResource(dg.ConfigurableResource):
    """Where every asset's Delta table lives: ``<root>/<asset name>``. Configured like the other resources: the
    platform's values come from :mod:`sae_assets.settings` through ``defs/resources.py``; the resource itself
    reads no environment."""

    root: str = Field(default=settings.DEFAULT_LAKE_ROOT,
                      description="Lake root: a local path or a deltalake URI such as s3://bucket/lake.")
    files_root: str | None = Field(
        default=None,
        description="Local directory for files that are not tables (trained SAE weights, exports); "
        "default: the lake root when it is local. Needed when the lake is on object storage.",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="deltalake storage options (e.g. AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP).",
    )

    @property
    def root_uri(self) -> str:
        return delta.root_uri(self.root)

    def table_uri(self, asset_name: str) -> str:
        return delta.table_uri(self.root_uri, asset_name)

    def local_dir(self, *parts: str) -> Path:
        """A local directory for files that are not tables (e.g. SAE weights): ``files_root`` or the lake root."""
        if self.files_root:
            base = Path(self.files_root).expanduser().resolve()
        elif delta.is_local_uri(self.root):
            base = Path(self.root_uri)
        else:
            raise ValueError(
                f"Lake root {self.root!r} is remote; files such as trained SAE weights need a local "
                "directory: set SAE_ASSETS_FILES (a shared filesystem mount when steps run on several hosts)."
            )
        path = base.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_partition(self, asset_name: str, df: pl.DataFrame, model: str,
                        layer: int | str | None) -> delta.WriteResult:
        """Replace one model × layer partition, or with ``layer=None`` every layer of ``model``."""
        return delta.write_partition(df, self.table_uri(asset_name), model, layer,
                                     storage_options=self.storage_options or None)

    def write_partition_batches(self, asset_name: str, batches: Callable[[], Iterable[pa.RecordBatch]],
                                schema: pa.Schema, model: str, layer: int | str) -> delta.WriteResult:
        """Replace one partition with record batches, one in memory at a time, committed at once."""
        return delta.write_partition_batches(batches, schema, self.table_uri(asset_name), model, layer,
                                             storage_options=self.storage_options or None)

    def iter_partition(self, asset_name: str, model: str, layer: int | str, columns: list[str] | None = None,
                       batch_rows: int = 512) -> Iterator[pl.DataFrame]:
        """One partition in frames of at most ``batch_rows`` rows (for tables too large to collect whole). Its
        files are checked first; a damaged table or file raises :class:`LakeReadError`."""
        uri, options = self.table_uri(asset_name), self.storage_options or None
        read_check.check_partition(uri, asset_name, model, layer, options)
        with read_check.reading(uri, asset_name, model, layer):
            for batch in delta.iter_partition_batches(uri, model, layer, columns, batch_rows, storage_options=options):
                yield pl.DataFrame(batch)

    def scan_partition(self, asset_name: str, model: str, layer: int | str | None = None) -> pl.LazyFrame:
        """One partition (``layer=None``: every layer of ``model``), lazily. Raises :class:`LakeReadError`, naming
        the asset to re-materialize, when the table is missing or its log unreadable, or a data file of the
        partition is missing or not the size the log recorded (deleted or truncated), before anything is read."""
        uri, options = self.table_uri(asset_name), self.storage_options or None
        read_check.check_partition(uri, asset_name, model, layer, options)
        with read_check.reading(uri, asset_name, model, layer):
            return delta.scan_partition(uri, model, layer, storage_options=options)

    def read_partition(self, asset_name: str, model: str, layer: int | str | None = None,
                       columns: list[str] | None = None, keep: pl.Expr | None = None) -> pl.DataFrame:
        """:meth:`scan_partition` collected (the rows matching ``keep``, only ``columns``, when given); a file that
        cannot be read also raises :class:`LakeReadError`."""
        lazy = self.scan_partition(asset_name, model, layer)
        lazy = lazy if keep is None else lazy.filter(keep)
        with read_check.reading(self.table_uri(asset_name), asset_name, model, layer):
            return (lazy.select(columns) if columns else lazy).collect()

    def missing_tables(self, *asset_names: str) -> list[str]:
        """The named tables that do not exist yet (their assets were never materialized)."""
        return [name for name in asset_names if self.table_version(name) is None]

    def table_version(self, asset_name: str) -> int | None:
        """The table's latest version; None when there is no table. An unreadable log raises LakeReadError."""
        uri = self.table_uri(asset_name)
        try:
            return delta.table_version(uri, storage_options=self.storage_options or None)
        except (DeltaError, OSError) as err:
            raise read_check.log_error(asset_name, uri, err) from err
