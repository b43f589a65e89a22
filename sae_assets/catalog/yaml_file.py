"""Reading the catalog file: its text as UTF-8 YAML, with mapping keys given twice remembered.

Every way the file can fail (unreadable, not UTF-8, not YAML) raises :class:`CatalogError` naming the file and,
for a syntax error, the line and column, so a caller such as the new-SAE sensor can skip with one message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sae_assets.catalog.errors import CatalogError


class _DuplicateKeyLoader(yaml.SafeLoader):
    """safe_load that remembers mapping keys given twice (plain YAML keeps the last one silently)."""

    duplicates: dict[str, list[int]]
    """Key -> the (1-based) lines it is given on."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in seen:
                self.duplicates.setdefault(key, [seen[key]]).append(line)
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def _where(err: yaml.YAMLError) -> str:
    """``line L, column C: problem`` from PyYAML's error, without its echo of the source text."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark, context = err.problem_mark, err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: {err.problem or err.context}"
        if err.context and context is not None and (context.line, context.column) != (mark.line, mark.column):
            where += f" ({err.context} that starts at line {context.line + 1}, column {context.column + 1})"
        return where
    if isinstance(err, yaml.reader.ReaderError):
        return f"character {err.position}: unacceptable character #x{err.character:04x}" if isinstance(
            err.character, int) else f"character {err.position}: {err.reason}"
    return str(err)


def read_text(path: Path) -> str:
    """The file's text; raises CatalogError when it cannot be read or is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CatalogError(f"SAE catalog {path} is not UTF-8 text (byte {err.start}: {err.reason}): save it as a "
                           "UTF-8 YAML file; nothing was loaded from it.") from err
    except OSError as err:
        raise CatalogError(f"SAE catalog {path} cannot be read ({type(err).__name__}: {err.strerror or err}): it "
                           "must be a readable YAML file.") from err


def load_yaml(text: str, path: Path | None) -> tuple[Any, dict[str, list[int]]]:
    """(the document, key -> lines for keys given twice in one mapping); raises CatalogError for text that is
    not YAML, naming the line and column."""
    loader: _DuplicateKeyLoader | None = None
    try:
        loader = _DuplicateKeyLoader(text)  # the reader rejects control characters already here
        loader.duplicates = {}
        return loader.get_single_data(), loader.duplicates
    except yaml.YAMLError as err:
        raise CatalogError(f"SAE catalog {path} is not valid YAML ({_where(err)}): fix the file there; nothing was "
                           "loaded from it.") from err
    finally:
        if loader is not None:
            loader.dispose()
