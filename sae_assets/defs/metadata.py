"""Metadata values shared by every asset: the Delta table written, and images for the UI."""

from __future__ import annotations

import base64

import dagster as dg

from sae_assets.storage.delta import WriteResult


def table_metadata(result: WriteResult) -> dict[str, dg.MetadataValue]:
    return {
        "dagster/row_count": dg.MetadataValue.int(result.num_rows),
        "dagster/uri": dg.MetadataValue.text(result.uri),
        "delta_table_version": dg.MetadataValue.int(result.version),
    }


def md_text(text: str | None) -> str:
    """Text from outside (corpus tokens, LLM labels) shown as text in a Markdown table: no cell breaks,
    no line breaks, no HTML."""
    return ((text or "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", "⏎"))


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")
