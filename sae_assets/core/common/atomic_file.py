"""The one way an export file (JSON, JSONL, CSV) is written: to a temporary file beside the target, then renamed
over it (``os.replace``, atomic on one filesystem). A reader never sees half a file; a write that fails leaves the
target as it was and no temporary file behind.

- :func:`atomic_file`: a file object to write into; the target is replaced when the ``with`` block ends cleanly.
- :func:`write_atomic`: the same for data already in memory.
- :func:`stage_file`: the data written now, published later (:meth:`StagedFile.commit`), e.g. once the tables it
  describes are written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["ExportError", "StagedFile", "atomic_file", "stage_file", "write_atomic"]


class ExportError(OSError):
    """An export file could not be written (directory missing or not writable, disk full...)."""


@dataclass(frozen=True)
class StagedFile:
    """Data written under the temporary name ``temp`` beside ``path``: :meth:`commit` renames it over ``path``
    (atomic), :meth:`discard` removes it."""

    temp: Path
    path: Path

    def commit(self) -> Path:
        """``path``, now holding the staged data; ExportError, and the temporary file removed, when the rename fails."""
        try:
            os.replace(self.temp, self.path)
        except OSError as err:
            self.discard()
            raise ExportError(f"could not write {self.path}: {err}") from err
        return self.path

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)


def _open_temp(path: Path, mode: Literal["w", "wb"]) -> tuple[IO[Any], StagedFile]:
    """A new temporary file beside ``path``, open for writing (mode 0644, text as UTF-8)."""
    directory = path.parent
    if not directory.is_dir():
        raise ExportError(f"export directory {directory} does not exist or is not a directory")
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise ExportError(f"export directory {directory} is not writable: {err}") from err
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the export from a web server running as another user
        out = os.fdopen(fd, mode) if mode == "wb" else os.fdopen(fd, mode, encoding="utf-8")
    except OSError as err:
        os.close(fd)
        Path(temp).unlink(missing_ok=True)
        raise ExportError(f"could not write {path}: {err}") from err
    return out, StagedFile(Path(temp), path)


@contextmanager
def _staged(path: Path | str, mode: Literal["w", "wb"]) -> Iterator[tuple[IO[Any], StagedFile]]:
    """The open temporary file and its :class:`StagedFile`; on an error in the block (or while closing) the
    temporary file is removed and the error raised as it is."""
    out, staged = _open_temp(Path(path), mode)
    try:
        with out:
            yield out, staged
    except BaseException:
        staged.discard()
        raise


@contextmanager
def atomic_file(path: Path | str, mode: Literal["w", "wb"] = "w") -> Iterator[IO[Any]]:
    """A file to write ``path``'s new content into (text as UTF-8 with ``"w"``). When the block ends cleanly the
    content replaces ``path`` at once; when it raises, ``path`` is untouched and the temporary file removed."""
    with _staged(path, mode) as (out, staged):
        yield out
    staged.commit()


def write_atomic(path: Path | str, data: bytes | str) -> Path:
    """``path`` replaced at once with ``data``; ExportError, and ``path`` untouched, when it fails."""
    staged = stage_file(path, data)
    return staged.commit()


def stage_file(path: Path | str, data: bytes | str) -> StagedFile:
    """``data`` written beside ``path`` under a temporary name, to be published by :meth:`StagedFile.commit` (or
    removed by :meth:`StagedFile.discard`); ExportError, leaving nothing, when it fails."""
    try:
        with _staged(path, "wb" if isinstance(data, bytes) else "w") as (out, staged):
            out.write(data)
    except ExportError:
        raise
    except OSError as err:
        raise ExportError(f"could not write {path}: {err}") from err
    return staged
