"""model × layer partitions: a dynamic ``model`` dimension validated against the catalog, static layers."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from sae_assets.catalog import Catalog, CatalogError, SaeLocation, load_catalog, validate_model_key

MODEL_PARTITIONS_NAME = "models"

model_partitions = dg.DynamicPartitionsDefinition(name=MODEL_PARTITIONS_NAME)
layer_partitions = dg.StaticPartitionsDefinition([str(i) for i in range(load_catalog().max_layer + 1)])
model_layer_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "layer": layer_partitions})


def partition_key(model: str, layer: int | str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model, "layer": str(layer)})


def model_and_layer(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    if not isinstance(key, dg.MultiPartitionKey):
        key = model_layer_partitions.get_partition_key_from_str(key)
    dims = key.keys_by_dimension
    return dims["model"], dims["layer"]


def resolve_partition(context: dg.AssetExecutionContext, catalog: Catalog | None = None) -> SaeLocation:
    """The SAE of the running partition; fails the step at once when the catalog has none."""
    model, layer = model_and_layer(context.partition_key)
    try:
        return (catalog or load_catalog()).resolve(model, layer)
    except CatalogError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err


def register_models(instance: dg.DagsterInstance, model_keys: Iterable[str],
                    catalog: Catalog | None = None) -> list[str]:
    """Add catalog model keys to the ``models`` dimension; returns the keys that were new."""
    catalog = catalog or load_catalog()
    keys = [validate_model_key(k) for k in model_keys]
    for key in keys:
        catalog.entry(key)  # unknown keys raise CatalogError naming the catalog file
    existing = set(instance.get_dynamic_partitions(MODEL_PARTITIONS_NAME))
    new = [k for k in keys if k not in existing]
    if new:
        instance.add_dynamic_partitions(MODEL_PARTITIONS_NAME, new)
    return new
