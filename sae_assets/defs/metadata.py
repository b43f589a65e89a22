"""Metadata values shared by every asset: the Delta table written, and images for the UI."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import dagster as dg

from sae_assets import settings
from sae_assets.resources.lake import LakeResource
from sae_assets.storage.delta import WriteResult


def input_table_versions(context: dg.AssetExecutionContext, lake: LakeResource) -> dict[str, int | None]:
    """The Delta version of each upstream asset's table as the step starts (None: no table yet): taken before
    reading, so a materialization names the inputs it read."""
    deps = set().union(*context.assets_def.asset_deps.values())
    return {key.to_user_string(): lake.table_version(key.to_user_string()) for key in sorted(deps)}


def table_metadata(result: WriteResult, inputs: dict[str, int | None] | None = None) -> dict[str, dg.MetadataValue]:
    """Row count, URI and Delta version written, and (lineage) the input table versions read."""
    meta: dict[str, dg.MetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(result.num_rows),
        "dagster/uri": dg.MetadataValue.text(result.uri),
        "delta_table_version": dg.MetadataValue.int(result.version),
    }
    if inputs is not None:
        meta["input_table_versions"] = dg.MetadataValue.json(inputs)
    return meta


def md_text(text: str | None) -> str:
    """Text from outside (corpus tokens, LLM labels) shown as text in a Markdown table: no cell breaks,
    no line breaks, no HTML."""
    return ((text or "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", "⏎"))


def viewer_link(model: str, layer: int, feature: int | None = None) -> dg.MetadataValue:
    """A link to the viewer (``SAE_ASSETS_VIEWER_URL``) on this partition's map, or on one feature's page."""
    query = {"model": model, "layer": layer} | ({"feature": feature} if feature is not None else {})
    return dg.MetadataValue.url(f"{settings.viewer_url()}/?{urlencode(query)}")


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")
