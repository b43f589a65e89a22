"""``new_sae_sensor``: a model key or layer that appears in the SAE catalog (its YAML file, or the drop folder of
SAELens directories) gets its ``models`` partition and one run of the job that analyses it end to end:
``analyze_sae`` for pretrained SAEs, ``full_pipeline`` for SAEs the platform trains."""

import json

import dagster as dg

from sae_assets.catalog import Catalog, CatalogError, load_catalog
from sae_assets.catalog.drop_folder import default_drop_folder
from sae_assets.defs.automation import sensor_status
from sae_assets.defs.jobs import analyze_sae_job, full_pipeline_job, pipeline_job_name
from sae_assets.defs.partitions import MODEL_PARTITIONS_NAME, layer_partitions, model_partitions, partition_key

LAYER_KEYS = layer_partitions.get_partition_keys()


def catalog_layers(catalog: Catalog) -> dict[str, tuple[str, int, str]]:
    """``"<model>|<layer>"`` -> (model key, layer, SAE source kind) for every SAE the catalog names."""
    return {f"{key}|{layer}": (key, layer, entry.sae.kind)
            for key, entry in catalog.entries.items() for layer in entry.layers}


def read_cursor(cursor: str | None) -> dict | None:
    """``{"seen": [...], "errors": [...]}``, or None before the first tick (or for an unreadable cursor)."""
    try:
        data = json.loads(cursor) if cursor else None
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("seen"), list) else None


def skipped_reason(catalog: Catalog) -> str | None:
    """Why a tick that starts no run skipped what it did: the first unusable entry or SAE folder, by path."""
    if not catalog.errors:
        return None
    where, why = sorted(catalog.errors.items())[0]
    more = len(catalog.errors) - 1
    return (f"No new SAE to run. Skipped until fixed: {where}: {why}"
            + (f" (and {more} more, each logged once)" if more else ""))


@dg.sensor(
    name="new_sae_sensor",
    jobs=[analyze_sae_job, full_pipeline_job],
    minimum_interval_seconds=30,
    default_status=sensor_status(),
    description="Watches the SAE catalog (SAE_ASSETS_CATALOG) and the drop folder of SAELens directories "
    "(SAE_ASSETS_SAE_DROP, <folder>/<model-key>/<layer>/). A new model key is added to the 'models' partitions; "
    "each new model × layer gets one run of analyze_sae (pretrained SAEs: the decoder and everything below it) "
    "or full_pipeline (SAEs the platform trains: trained_sae first). The first tick records the catalog as it is "
    "(adding its partitions) without launching runs. Malformed entries and SAE folders are logged and skipped.",
)
def new_sae_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    try:
        catalog = load_catalog()
    except CatalogError as err:  # the whole file is unusable: keep the cursor, say why, try again next tick
        context.log.error("SAE catalog unreadable, nothing changed: %s", err)
        return dg.SkipReason(f"SAE catalog unreadable: {err}")
    cursor = read_cursor(context.cursor)
    reported = set(cursor.get("errors", [])) if cursor else set()
    for where, why in sorted(catalog.errors.items()):
        if f"{where}: {why}" not in reported:
            context.log.warning("Skipped %s: %s", where, why)
    layers = catalog_layers(catalog)
    existing = set(context.instance.get_dynamic_partitions(MODEL_PARTITIONS_NAME))
    new_models = sorted({model for model, _, _ in layers.values()} - existing)
    beyond = sorted(t for t, (_, layer, _) in layers.items() if str(layer) not in LAYER_KEYS)
    if beyond:  # the layer dimension is fixed when the code location loads: these wait for a reload
        context.log.warning("Not yet partitions (layers 0-%s in this code location; reload it to add them): %s",
                            LAYER_KEYS[-1], ", ".join(beyond[:10]))
        layers = {t: v for t, v in layers.items() if t not in beyond}
    seen = set(cursor["seen"]) if cursor else set()
    new = [] if cursor is None else sorted(set(layers) - seen)
    runs = []
    for token in new:
        model, layer, kind = layers[token]
        job = pipeline_job_name(kind)
        context.log.info("New SAE %s (%s): requesting a %s run", token, kind, job)
        runs.append(dg.RunRequest(run_key=f"new-sae:{token}", job_name=job, partition_key=partition_key(model, layer),
                                  tags={"sae_assets/trigger": "new_sae"}))
    if cursor is None:
        context.log.info("First tick: %d model keys with %d SAEs recorded (catalog %s, drop folder %s); SAEs "
                         "added from now on start runs.", len({m for m, _, _ in layers.values()}), len(layers),
                         catalog.path, default_drop_folder())
    return dg.SensorResult(
        run_requests=runs,
        skip_reason=None if runs else skipped_reason(catalog),
        dynamic_partitions_requests=[model_partitions.build_add_request(new_models)] if new_models else [],
        cursor=json.dumps({"seen": sorted(seen | set(layers)),
                           "errors": sorted(f"{w}: {y}" for w, y in catalog.errors.items())}),
    )
