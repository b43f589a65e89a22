"""``weekly_explanations_refresh``: re-read every materialized partition's explanations and what depends on them.

Dagster's schedule daemon launches runs, not backfills (a backfill from a run request exists only for sensors,
through a private constructor), so each tick requests one run of ``refresh_explanations`` per materialized
partition, all tagged with the tick (``sae_assets/refresh``): in the UI, filter runs by that tag to follow it.
The ``gpu`` pool and the run queue keep them orderly. Partitions never materialized are not touched.
"""

import dagster as dg

from sae_assets import settings
from sae_assets.defs.assets.explanations import explanations
from sae_assets.defs.automation import schedule_status
from sae_assets.defs.jobs import refresh_explanations_job
from sae_assets.defs.partitions import MODEL_PARTITIONS_NAME, model_and_layer, partition_key


def materialized_partitions(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[list[dg.MultiPartitionKey],
                                                                                      list[str]]:
    """The asset's materialized model × layer keys whose model is still a partition, and those whose is not."""
    models = set(instance.get_dynamic_partitions(MODEL_PARTITIONS_NAME))
    keep, gone = [], []
    for raw in sorted(instance.get_materialized_partitions(key)):
        model, layer = model_and_layer(raw)
        if model in models:
            keep.append(partition_key(model, layer))
        else:
            gone.append(raw)
    return keep, gone


@dg.schedule(
    name="weekly_explanations_refresh",
    cron_schedule=settings.explanations_cron(),  # default: Mondays 03:00 UTC
    job=refresh_explanations_job,
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Weekly (SAE_ASSETS_EXPLANATIONS_CRON): one refresh_explanations run per partition whose "
    "explanations were materialized (Neuronpedia updates its explanations), tagged with the tick.",
)
def weekly_explanations_refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    keys, gone = materialized_partitions(context.instance, explanations.key)
    if gone:
        context.log.warning("Not refreshing %d partitions whose model is no longer a partition: %s", len(gone),
                            ", ".join(gone[:10]))
    if not keys:
        message = ("No explanations partition has been materialized yet: nothing to refresh. Materialize "
                   "explanations for a partition (UI, CLI or the demo) and the next tick refreshes it.")
        context.log.info(message)
        return dg.SkipReason(message)
    tick = (context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual")
    context.log.info("Refreshing explanations of %d partitions (tick %s)", len(keys), tick)
    return [dg.RunRequest(run_key=f"refresh:{tick}:{key}", partition_key=key, tags={"sae_assets/refresh": tick})
            for key in keys]
