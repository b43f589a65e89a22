"""Steps on Celery workers (``SAE_ASSETS_EXECUTOR=celery``): ``gpu``-pool steps on the ``gpu`` queue, the rest on
``cpu``; a step whose worker is lost fails in bounded time and frees its pool slot.

The run is launched as usual (CLI, UI, sensor, daemon: Dagster's ``CeleryRunLauncher`` is broken upstream,
dagster-io/dagster#29660) and orchestrated in its own process by dagster-celery's loop: the ``gpu`` pool is claimed
there, before a step is sent, so the pool's limit holds across runs and workers. Each step is a task on its queue
(op tag ``dagster-celery/queue``); a worker (``python -m sae_assets.worker --queue gpu``) runs it as
``dagster api execute_step`` would, against the same instance (Postgres) and lake (S3).

dagster-celery waits on a task's result and nothing else, so a worker that dies would leave the run STARTED and
the slot held forever (dagster-io/dagster#33493). :class:`WatchedStep` is the result the loop polls: it also
pings the worker that started the step (``task_track_started``) and turns a lost worker into the step's
STEP_FAILURE, which names the step and the worker and frees the slot like any failure:

- a worker's child killed mid-step (OOM, ``kill -9``): Celery reports ``WorkerLostError`` at once;
- a whole worker killed: no ping answered for :data:`LOST_AFTER_S` (its children die with it: see
  :mod:`sae_assets.worker`, so a lost step never writes after its run failed);
- a queue that no live worker consumes: reported in the run's log every :data:`QUEUE_REPORT_EVERY_S`, not waited
  on silently.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg
from celery import Celery
from celery.exceptions import DuplicateTaskNameWarning, TaskRevokedError
from celery.result import AsyncResult
from dagster._core.events import DagsterEvent  # the loop takes serialized events: Dagster's own event type
from dagster._core.execution.plan.objects import StepFailureData
from dagster._serdes import serialize_value
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task
from dagster_celery.make_app import make_app

from sae_assets import settings
from sae_assets.scale_out.queues import CPU_QUEUE

if TYPE_CHECKING:
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan
    from dagster._core.execution.plan.state import KnownExecutionState
    from dagster._core.execution.plan.step import ExecutionStep

CHECK_EVERY_S = 5.0  # how often a step's worker is pinged while it runs
LOST_AFTER_S = 30.0  # a worker that answers no ping for this long is lost
PING_TIMEOUT_S = 1.0
QUEUE_REPORT_EVERY_S = 300.0


def celery_config() -> dict[str, Any]:
    """The Celery app settings runs and workers share (beside dagster-celery's defaults)."""
    return {
        "task_default_queue": CPU_QUEUE,
        "task_track_started": True,  # a STARTED result names the worker (hostname, pid) holding the step
        "result_extended": True,  # a finished result names it too
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": True,  # a busy worker reserves no second step that its death would strand
        "broker_connection_retry_on_startup": True,
    }


def celery_app() -> Celery:
    """The Celery app of runs and workers: broker and backend from the settings, :func:`celery_config`."""
    executor = CeleryExecutor.for_cli(broker=settings.celery_broker(), backend=settings.celery_backend(),
                                      config_source=celery_config())
    return make_app(executor.app_args())


class Fleet:
    """What the run knows of the workers, asked of them over the broker and remembered for a few seconds."""

    def __init__(self, app: Celery, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self._consumers: tuple[float, dict[str, list[str]]] | None = None

    def answers(self, worker: str) -> bool:
        """Whether ``worker`` (a Celery hostname, e.g. ``gpu1@host``) answers a ping."""
        return bool(self.app.control.ping(destination=[worker], timeout=PING_TIMEOUT_S))

    def consumers(self, queue: str) -> list[str]:
        """The live workers that consume ``queue``."""
        now = self.clock()
        if self._consumers is None or now - self._consumers[0] > CHECK_EVERY_S:
            replies = self.app.control.inspect(timeout=PING_TIMEOUT_S).active_queues() or {}
            by_queue: dict[str, list[str]] = {}
            for worker, queues in replies.items():
                for q in queues:
                    by_queue.setdefault(q["name"], []).append(worker)
            self._consumers = (now, by_queue)
        return self._consumers[1].get(queue, [])


class WatchedStep:
    """One step's Celery result as dagster-celery's loop polls it (``ready``, ``get``, ``revoke``), watching the
    worker that holds it; a lost worker becomes the step's failure (see the module's docstring)."""

    def __init__(self, result: AsyncResult, fleet: Fleet, plan_context: PlanOrchestrationContext,
                 step: ExecutionStep, queue: str) -> None:
        self.result, self.fleet, self.plan_context = result, fleet, plan_context
        self.step, self.queue = step, queue
        self.worker: str | None = None
        self.worker_pid: int | None = None
        self.lost: str | None = None
        self._next_check = 0.0
        self._silent_since: float | None = None
        self._queue_reported_at: float | None = None

    def ready(self) -> bool:
        if self.lost is not None or self.result.ready():
            return True
        now = self.fleet.clock()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        if self.result.state == "STARTED":
            self._watch_worker(now)
        elif self.worker is None:
            self._report_idle_queue(now)
        return self.lost is not None

    def get(self) -> list[str]:
        """The step's serialized events: the worker's, or one STEP_FAILURE when the worker was lost."""
        if self.lost is None:
            try:
                return self.result.get(propagate=True)
            except TaskRevokedError:
                raise  # a cancelled run: dagster-celery reports it
            except Exception as err:  # noqa: BLE001 - any task error is this step's failure
                self._note_worker(self.result.info if isinstance(self.result.info, dict) else {})
                self.lost = (f"step {self.step.key} failed on Celery worker {self._worker_text()}: "
                             f"{type(err).__name__}: {err}")
        return [serialize_value(self._failure_event())]

    def revoke(self) -> None:
        self.result.revoke(terminate=True)  # a cancelled run stops its running steps, not only queued ones

    def _watch_worker(self, now: float) -> None:
        info = self.result.info
        self._note_worker(info if isinstance(info, dict) else {})
        if self.worker is None or self.fleet.answers(self.worker):
            self._silent_since = None
            return
        if self._silent_since is None:
            self._silent_since = now
        elif now - self._silent_since >= LOST_AFTER_S:
            self.lost = (f"Celery worker {self._worker_text()} was lost while it ran step {self.step.key}: "
                         f"no answer to a ping for {now - self._silent_since:.0f} s")

    def _note_worker(self, info: dict[str, Any]) -> None:
        self.worker = self.worker or info.get("hostname") or self.result.worker
        self.worker_pid = self.worker_pid or info.get("pid")

    def _worker_text(self) -> str:
        pid = f" (pid {self.worker_pid})" if self.worker_pid else ""
        return f"{self.worker or 'unknown'}{pid}"

    def _report_idle_queue(self, now: float) -> None:
        if self._queue_reported_at is not None and now - self._queue_reported_at < QUEUE_REPORT_EVERY_S:
            return
        if self.fleet.consumers(self.queue):
            return
        self._queue_reported_at = now
        self.plan_context.log.warning(
            f"No live Celery worker consumes queue {self.queue!r}: step {self.step.key} waits until one starts "
            f"(python -m sae_assets.worker --queue {self.queue}, with the same settings as this run).")

    def _failure_event(self) -> DagsterEvent:
        lost = (self.lost or f"step {self.step.key} was lost").rstrip(".")
        message = f"{lost}. The step is failed and its pool slot freed; re-run the partition."
        try:
            raise StepWorkerLost(message)
        except StepWorkerLost:
            error = serializable_error_info_from_exc_info(sys.exc_info())
        return DagsterEvent.step_failure_event(self.plan_context.for_step(self.step),
                                               StepFailureData(error=error, user_failure_data=None), message=message)


class StepWorkerLost(Exception):
    """A step's Celery task ended without the step's own events: its worker died, or the task failed outside it."""


class WatchedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor, each task watched by a :class:`WatchedStep`."""

    def execute(self, plan_context: PlanOrchestrationContext,
                execution_plan: ExecutionPlan) -> Iterator[dg.DagsterEvent]:
        fleets: dict[int, Fleet] = {}

        def submit(app: Celery, context: PlanOrchestrationContext, step: ExecutionStep, queue: str,
                   priority: int, known_state: KnownExecutionState | None) -> WatchedStep:
            fleet = fleets.setdefault(id(app), Fleet(app))
            with warnings.catch_warnings():  # dagster-celery registers its task again for every step it sends
                warnings.simplefilter("ignore", DuplicateTaskNameWarning)
                result = _submit_task(app, context, step, queue, priority, known_state)
            return WatchedStep(result, fleet, context, step, queue)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


@dg.executor(name="celery", config_schema=CELERY_CONFIG, requirements=dg.multiple_process_executor_requirements())
def watched_celery_executor(init_context: dg.InitExecutorContext) -> WatchedCeleryExecutor:
    """dagster-celery's ``celery_executor`` (same config), whose runs fail a step whose worker is lost."""
    from dagster._core.execution.retries import RetryMode
    config: dict[str, Any] = dict(init_context.executor_config)
    return WatchedCeleryExecutor(broker=config.get("broker"), backend=config.get("backend"),
                                 include=config.get("include"), config_source=config.get("config_source"),
                                 retries=RetryMode.from_config(config["retries"]))


def celery_executor_from_settings() -> dg.ExecutorDefinition:
    """:func:`watched_celery_executor` with the broker, backend and app settings the workers use."""
    return watched_celery_executor.configured({"broker": settings.celery_broker(),
                                               "backend": settings.celery_backend(),
                                               "config_source": celery_config()})
