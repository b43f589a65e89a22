"""Named automation conditions, and the sensor that evaluates them (running by default).

- ``on_new_inputs`` (GPU / long steps: the scan, labels, optimized prompts): materialize a partition when an
  input partition was updated or the partition is newly missing with its inputs present; a code change alone
  never re-runs them (re-run those by hand or by backfill when a change matters).
- ``cheap_refresh`` (seconds: clusters, explanations, embeddings, scores, maps): the same, and also when the
  asset's code version changed.
- ``report_refresh`` (model-level reports over all layers): when any layer's input updated, whatever layers
  are missing (a model has SAEs at some layers only).
The entry assets (``trained_sae``, ``sae_decoder``, ``neuronpedia_explanations``) have none: ``new_sae_sensor``,
the jobs, the weekly schedule and users start them. ``neuronpedia_explanations`` is an optional input
(:data:`OPTIONAL_INPUTS`): the conditions neither wait for it nor re-run a partition when it changes (a model
without Neuronpedia explanations is labelled without them; a Neuronpedia refresh does not re-run the LLM labels).
Sensors and schedules are running by default; ``SAE_ASSETS_AUTOMATION=stopped`` makes them start stopped.
"""

import dagster as dg

from sae_assets import settings

AC = dg.AutomationCondition


def default_running() -> bool:
    """Sensors and schedules start running unless ``SAE_ASSETS_AUTOMATION=stopped`` (then: start them in the UI)."""
    return settings.automation_running()


def sensor_status() -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if default_running() else dg.DefaultSensorStatus.STOPPED


def schedule_status() -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if default_running() else dg.DefaultScheduleStatus.STOPPED


OPTIONAL_INPUTS = dg.AssetSelection.assets("neuronpedia_explanations")


def on_new_inputs() -> dg.AutomationCondition:
    return AC.eager().ignore(OPTIONAL_INPUTS).with_label("on_new_inputs")


def cheap_refresh() -> dg.AutomationCondition:
    # Dagster types since_last_handled's self as AssetKey | AssetCheckKey; an asset's condition is fine.
    code_changed = (AC.code_version_changed().since_last_handled()  # type: ignore[misc]
                    & ~AC.any_deps_missing().ignore(OPTIONAL_INPUTS)
                    & ~AC.any_deps_in_progress().ignore(OPTIONAL_INPUTS) & ~AC.in_progress())
    return (AC.eager().ignore(OPTIONAL_INPUTS) | code_changed).with_label("cheap_refresh")


def report_refresh() -> dg.AutomationCondition:
    return ((AC.any_deps_updated() | AC.code_version_changed()).since_last_handled()  # type: ignore[misc]
            & ~AC.any_deps_in_progress() & ~AC.in_progress()).with_label("report_refresh")


automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=sensor_status(),
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions (sae_assets.defs.automation).",
)
