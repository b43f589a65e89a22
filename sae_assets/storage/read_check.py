"""Reading a lake table that was damaged under its readers: the table deleted, its transaction log unreadable, or
a data file of the partition deleted, truncated or unreadable.

Before a partition is read, :func:`check_partition` compares its data files with what the Delta log recorded (each
file present at its recorded size: one file-metadata request per file, no data read), so a reading step fails
before it writes anything, with one :class:`LakeReadError` naming the table, the partition, the file and the asset
to re-materialize, instead of a deltalake, pyarrow or polars error (a truncated parquet file makes polars panic).
:func:`reading` wraps the errors of the read itself (a file damaged without changing size) the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from sae_assets.core.scan.scan_identity import SCAN_TABLES
from sae_assets.storage.delta import table_filesystem

TABLE_WRITERS = {**dict.fromkeys(SCAN_TABLES, "activation_scan"), "feature_map_edges": "feature_map"}
"""Tables written by an asset step of another name (every other table is its asset's name)."""


def writer_of(table: str) -> str:
    """The asset step that writes ``table``: what to (re-)materialize when it is missing or damaged."""
    return TABLE_WRITERS.get(table, table)


def _partition(model: str | None, layer: int | str | None) -> str:
    if model is None:
        return ""
    return f" for partition {layer}|{model}" if layer is not None else f" for every layer of {model}"


class LakeReadError(RuntimeError):
    """A lake table, or one partition of it, cannot be read. The message names the table, its URI, the partition,
    what is wrong and which asset to (re-)materialize; ``__cause__`` keeps the library's own error, if any."""

    def __init__(self, message: str, table: str | None = None, uri: str | None = None) -> None:
        super().__init__(message)
        self.table, self.uri = table, uri


def read_error(table: str, uri: str, problem: str, model: str | None = None, layer: int | str | None = None,
               whole_table: bool = False) -> LakeReadError:
    """``problem`` (what is wrong with the table or partition) with the table, URI and what to do."""
    writer = writer_of(table)
    scan = f"{', '.join(SCAN_TABLES[:-1])} and {SCAN_TABLES[-1]}"
    writes = (f" (it writes {scan} together)" if writer == "activation_scan"
              else f" (it writes {table})" if writer != table else "")
    if whole_table:
        todo = (f"Move {uri} aside (or restore it from a backup), then re-materialize {writer}{writes} for every "
                "partition it held.")
    else:
        todo = f"Re-materialize {writer}{writes}{_partition(model, layer)}, then run this step again."
    return LakeReadError(f"Cannot read the Delta table {table} ({uri}){_partition(model, layer)}: {problem}. {todo}",
                         table, uri)


def open_checked(uri: str, table: str, model: str, layer: int | str | None,
                 storage_options: dict[str, str] | None) -> DeltaTable:
    """The Delta table at ``uri``; raises :class:`LakeReadError` when there is none or its log is unreadable."""
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError as err:
        raise _missing(table, uri, model, layer) from err
    except (DeltaError, OSError, ValueError) as err:
        raise log_error(table, uri, err, model, layer) from err


def log_error(table: str, uri: str, err: BaseException, model: str | None = None,
              layer: int | str | None = None) -> LakeReadError:
    """The error for a table whose transaction log cannot be read."""
    return read_error(table, uri, f"its transaction log (_delta_log) cannot be read ({type(err).__name__}: "
                      f"{_first_line(err)})", model, layer, whole_table=True)


def _missing(table: str, uri: str, model: str, layer: int | str | None) -> LakeReadError:
    return read_error(table, uri, "the table does not exist (never materialized, or deleted)", model, layer)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def check_partition(uri: str, table: str, model: str, layer: int | str | None,
                    storage_options: dict[str, str] | None = None) -> int:
    """Every data file of the partition (``layer=None``: of every layer of ``model``) is where the Delta log says,
    at the size it recorded; returns the table version checked. Raises :class:`LakeReadError` naming the first
    damaged file and how many there are."""
    delta_table = open_checked(uri, table, model, layer, storage_options)
    try:
        actions = pa.table(delta_table.get_add_actions(flatten=True)).to_pydict()
    except (DeltaError, OSError) as err:
        raise log_error(table, uri, err, model, layer) from err
    unpartitioned = [None] * len(actions["path"])  # a table not partitioned by model, layer: check every file
    recorded = [(unquote(path), size, file_layer) for path, size, file_model, file_layer in zip(
        actions["path"], actions["size_bytes"], actions.get("partition.model", unpartitioned),
        actions.get("partition.layer", unpartitioned), strict=True)
        if file_model in (model, None) and (layer is None or file_layer in (str(layer), None)) and "://" not in path]
    if not recorded:
        return delta_table.version()
    try:
        infos = table_filesystem(uri, storage_options).get_file_info([path for path, _, _ in recorded])
    except (OSError, DeltaError) as err:
        raise read_error(table, uri, f"its data files cannot be listed ({type(err).__name__}: "
                         f"{_first_line(err)})", model, layer) from err
    damaged = []
    for (path, size, file_layer), info in zip(recorded, infos, strict=True):
        if info.type == pafs.FileType.NotFound:
            damaged.append((path, file_layer, "is missing"))
        elif info.size != size:
            damaged.append((path, file_layer, f"is {info.size:,} bytes where the table's log recorded {size:,} "
                                              "(truncated or overwritten)"))
    if damaged:
        path, file_layer, what = damaged[0]
        more = f" ({len(damaged)} of its {len(recorded)} data files are damaged)" if len(damaged) > 1 else ""
        raise read_error(table, uri, f"its data file {uri.rstrip('/')}/{path} {what}{more}", model,
                         file_layer if layer is None else layer)
    return delta_table.version()


def _is_read_failure(err: BaseException) -> bool:
    """Errors of a read from damaged files: the libraries' own, and the Rust panics polars and deltalake raise
    (a ``BaseException``) on a corrupt parquet file."""
    return isinstance(err, OSError | DeltaError | pa.ArrowException | pl.exceptions.ComputeError) or \
        type(err).__name__ == "PanicException"


@contextmanager
def reading(uri: str, table: str, model: str, layer: int | str | None) -> Iterator[None]:
    """Raise the errors of reading the partition's files as :class:`LakeReadError`."""
    try:
        yield
    except LakeReadError:
        raise
    except BaseException as err:
        if isinstance(err, TableNotFoundError):
            raise _missing(table, uri, model, layer) from err
        if not _is_read_failure(err):
            raise
        raise read_error(table, uri, f"a data file cannot be read ({type(err).__name__}: {_first_line(err)})",
                         model, layer) from err
