"""The Celery executor's choice and settings, and how a watched step notices a lost worker or an unserved queue
(fake results and a fake clock; the real thing, with workers killed, is tests/deploy/test_celery.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
import pytest

from sae_assets.defs.executors import GPU_OP_TAGS, executor_from_env
from sae_assets.scale_out import celery_executor
from sae_assets.scale_out.celery_executor import LOST_AFTER_S, QUEUE_REPORT_EVERY_S, WatchedStep, celery_app


@dataclass
class FakeResult:
    state: str = "PENDING"
    info: object = None
    worker: str | None = None
    done: bool = False
    revoked: list[bool] = field(default_factory=list)

    def ready(self) -> bool:
        return self.done

    def revoke(self, terminate: bool = False) -> None:
        self.revoked.append(terminate)


@dataclass
class FakeFleet:
    now: float = 0.0
    alive: set[str] = field(default_factory=set)
    serving: dict[str, list[str]] = field(default_factory=dict)
    pings: int = 0

    def clock(self) -> float:
        return self.now

    def answers(self, worker: str) -> bool:
        self.pings += 1
        return worker in self.alive

    def consumers(self, queue: str) -> list[str]:
        return self.serving.get(queue, [])


@dataclass
class FakeLog:
    warnings: list[str] = field(default_factory=list)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


@dataclass
class FakeContext:
    log: FakeLog = field(default_factory=FakeLog)


@dataclass
class FakeStep:
    key: str = "trained_sae"


def _watched(result: FakeResult, fleet: FakeFleet, queue: str = "gpu") -> tuple[WatchedStep, FakeContext]:
    context = FakeContext()
    return WatchedStep(result, fleet, context, FakeStep(), queue), context  # type: ignore[arg-type]


def _poll(step: WatchedStep, fleet: FakeFleet, until: float, every: float = 1.0) -> bool:
    while fleet.now < until:
        fleet.now += every
        if step.ready():
            return True
    return False


def test_a_worker_that_stops_answering_loses_its_step_after_the_bound() -> None:
    fleet = FakeFleet(alive={"gpu-1@host"})
    result = FakeResult(state="STARTED", info={"hostname": "gpu-1@host", "pid": 4242})
    step, _ = _watched(result, fleet)
    assert not _poll(step, fleet, until=100.0)  # alive: watched, never lost
    assert fleet.pings == pytest.approx(100 / celery_executor.CHECK_EVERY_S, abs=1)
    fleet.alive.clear()
    killed_at = fleet.now
    assert _poll(step, fleet, until=killed_at + LOST_AFTER_S + 2 * celery_executor.CHECK_EVERY_S)
    assert step.lost is not None and "gpu-1@host (pid 4242)" in step.lost and "trained_sae" in step.lost
    assert fleet.now - killed_at <= LOST_AFTER_S + 2 * celery_executor.CHECK_EVERY_S


def test_a_worker_that_answers_again_keeps_its_step() -> None:
    fleet = FakeFleet()
    step, _ = _watched(FakeResult(state="STARTED", info={"hostname": "gpu-1@host", "pid": 1}), fleet)
    assert not _poll(step, fleet, until=LOST_AFTER_S - 1)  # silent, not yet for long enough
    fleet.alive.add("gpu-1@host")
    assert not _poll(step, fleet, until=fleet.now + 3 * LOST_AFTER_S)
    assert step.lost is None


def test_a_queue_without_workers_is_reported_in_the_run_log_and_again_later() -> None:
    fleet = FakeFleet(serving={"cpu": ["cpu-1@host"]})
    step, context = _watched(FakeResult(), fleet)
    assert not _poll(step, fleet, until=QUEUE_REPORT_EVERY_S - 10)
    assert len(context.log.warnings) == 1
    assert "No live Celery worker consumes queue 'gpu'" in context.log.warnings[0]
    assert "python -m sae_assets.worker --queue gpu" in context.log.warnings[0]
    assert not _poll(step, fleet, until=QUEUE_REPORT_EVERY_S + 10)
    assert len(context.log.warnings) == 2
    served, served_context = _watched(FakeResult(), FakeFleet(serving={"gpu": ["gpu-1@host"]}))
    assert not _poll(served, served.fleet, until=60.0)  # type: ignore[arg-type]
    assert served_context.log.warnings == []


def test_a_cancelled_run_terminates_its_running_steps() -> None:
    result = FakeResult(state="STARTED")
    step, _ = _watched(result, FakeFleet())
    step.revoke()
    assert result.revoked == [True]


def test_the_celery_executor_takes_broker_and_backend_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "celery")
    monkeypatch.setenv("SAE_ASSETS_CELERY_BROKER", "redis://10.0.0.5:6379/1")
    executor = executor_from_env()
    assert executor.name == "celery"
    app = celery_app()
    assert app.conf.broker_url == "redis://10.0.0.5:6379/1" and app.conf.result_backend == "redis://10.0.0.5:6379/1"
    assert app.conf.task_default_queue == "cpu" and app.conf.task_track_started and app.conf.worker_disable_prefetch
    monkeypatch.setenv("SAE_ASSETS_CELERY_BACKEND", "redis://10.0.0.6:6379/2")
    assert celery_app().conf.result_backend == "redis://10.0.0.6:6379/2"
    assert GPU_OP_TAGS["dagster-celery/queue"] == "gpu"


def test_every_gpu_pool_asset_goes_to_the_gpu_queue_and_no_other() -> None:
    from sae_assets.definitions import defs
    for asset in defs.assets or []:
        assert isinstance(asset, dg.AssetsDefinition)
        on_gpu_queue = asset.op.tags.get("dagster-celery/queue") == "gpu"
        assert on_gpu_queue == (asset.op.pool == "gpu"), asset.op.name
