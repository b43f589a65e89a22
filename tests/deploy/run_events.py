"""What a run's event log says about where its steps ran: which Celery worker, which process, when."""

from __future__ import annotations

import subprocess
import time

import dagster as dg

from sae_assets.defs.executors import GPU_POOL

CELERY_WORKER = "Celery worker"  # dagster-celery's metadata label on a worker's "Executing steps" event


def gpu_steps() -> set[str]:
    """The steps (asset op names) in the ``gpu`` pool."""
    from sae_assets.definitions import defs
    return {a.op.name for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.op.pool == GPU_POOL}


def run_by_tag(instance: dg.DagsterInstance, key: str, value: str) -> dg.DagsterRun:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={key: value}))
    assert len(runs) == 1, f"{len(runs)} runs tagged {key}={value}"
    return runs[0]


def _events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[dg.EventLogEntry]:
    return list(instance.all_logs(run_id, of_type=kind))


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that said it executes it."""
    workers = {}
    for entry in _events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata if entry.dagster_event else {}
        if CELERY_WORKER in metadata and entry.step_key:
            workers[entry.step_key] = metadata[CELERY_WORKER].value
    return workers


def step_placements(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[str, int]]:
    """step key -> (Celery worker, pid of the process whose STEP_START it is)."""
    workers = step_workers(instance, run_id)
    starts = {e.step_key: e.dagster_event.pid for e in _events(instance, run_id, dg.DagsterEventType.STEP_START)
              if e.dagster_event}
    assert set(starts) == set(workers), f"steps without a worker: {set(starts) ^ set(workers)}"
    return {step: (workers[step], pid) for step, pid in starts.items()}


def step_intervals(instance: dg.DagsterInstance, run_id: str, steps: set[str]) -> list[tuple[float, float, str]]:
    """(start, end, step) of each of ``steps`` that ran: STEP_START to STEP_SUCCESS/FAILURE."""
    starts = {e.step_key: e.timestamp for e in _events(instance, run_id, dg.DagsterEventType.STEP_START)}
    ends = {e.step_key: e.timestamp for kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
            for e in _events(instance, run_id, kind)}
    return [(starts[s], ends[s], s) for s in steps if s in starts]


def wait_for_message(instance: dg.DagsterInstance, key: str, value: str, text: str, process: subprocess.Popen,
                     timeout_s: float = 120.0) -> str:
    """The first message of the run tagged ``key=value`` that contains ``text``, once it is logged."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run's process exited ({process.returncode}) before logging {text!r}")
        for run in instance.get_runs(filters=dg.RunsFilter(tags={key: value})):
            for entry in instance.all_logs(run.run_id):
                if text in entry.message:
                    return entry.message
        time.sleep(0.5)
    raise AssertionError(f"{text!r} was not logged within {timeout_s:.0f} s")


def wait_for_step_start(instance: dg.DagsterInstance, key: str, value: str, step: str,
                        process: subprocess.Popen, timeout_s: float = 300.0) -> tuple[str, str]:
    """Once ``step`` of the run tagged ``key=value`` has started on a worker: (run id, worker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run's process exited ({process.returncode}) before {step} started")
        runs = instance.get_runs(filters=dg.RunsFilter(tags={key: value}))
        if runs:
            run_id = runs[0].run_id
            started = {e.step_key for e in _events(instance, run_id, dg.DagsterEventType.STEP_START)}
            worker = step_workers(instance, run_id).get(step)
            if step in started and worker:
                return run_id, worker
        time.sleep(0.1)
    raise AssertionError(f"{step} did not start within {timeout_s:.0f} s")


def assert_succeeded(instance: dg.DagsterInstance, key: str, value: str) -> None:
    """The run tagged ``key=value`` succeeded; otherwise fail with what its failure events say."""
    run = run_by_tag(instance, key, value)
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return
    failures = [e for kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE)
                for e in _events(instance, run.run_id, kind)]
    said = "\n".join(f"{e.step_key or 'run'}: {e.message}\n{_error_text(e)}" for e in failures)
    raise AssertionError(f"run {key}={value} ended {run.status.value}:\n{said}")


def _error_text(entry: dg.EventLogEntry) -> str:
    data = entry.dagster_event.event_specific_data if entry.dagster_event else None
    error = getattr(data, "error", None)
    return error.to_string()[-3000:] if error is not None else ""
