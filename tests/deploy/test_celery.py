"""Steps on Celery workers, as deploy/celery lays them out, on 127.0.0.1: PostgreSQL holds the instance, Redis is
the broker, moto the S3 lake; one ``cpu`` and two ``gpu`` workers started with the README's command. Two
partitions of the embedded default run at once (launched as a CLI run is, orchestrated in their own processes),
then the same partitions in-process for reference; then a worker's child and a whole worker are killed mid-step;
last, no ``gpu`` worker is left while a run waits on one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from sae_assets.defs.partitions import register_models
from tests.defs.helpers import TINY_EVALS, TINY_SCAN, TINY_TRAINING
from tests.deploy.cluster import Cluster, running_cluster, stop_group
from tests.deploy.lake_compare import assert_lakes_equal, table_version
from tests.deploy.run_events import (
    assert_succeeded,
    gpu_steps,
    run_by_tag,
    step_intervals,
    step_placements,
    wait_for_message,
    wait_for_step_start,
)

MODEL = "smollm2-135m@demo-res"
PARTITIONS = {2: f"2|{MODEL}", 4: f"4|{MODEL}"}
ENV = {"SAE_ASSETS_BUDGET": "cpu", "SAE_ASSETS_DEVICE": "cpu", "SAE_ASSETS_MIN_EXPLAINED_VARIANCE": "0",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 3 workers on 2 cores; the reference run alike
RUN_CONFIG = {"ops": {
    "trained_sae": {"config": TINY_TRAINING},
    "activation_scan": {"config": TINY_SCAN},
    "sae_evals": {"config": TINY_EVALS},
    "logit_effects": {"config": {"top_k": 5, "memory_budget_mib": 64}},
    "feature_labels": {"config": {"max_features": 4, "llm_max_features": 1, "n_shown": 2}},
    "feature_clusters": {"config": {"n_neighbors": 5, "min_samples": 2, "pca_components": None}},
    "optimized_prompts": {"config": {"max_features": 1, "max_steps": 2, "batch_size": 8, "top_k": 8, "length": 4,
                                     "continuous_steps": 2, "restarts": 0}},
}}
TRAIN_CONFIG = {"ops": {"trained_sae": {"config": TINY_TRAINING}}}
RUN_TIMEOUT_S = 900
FAIL_BOUND_S = 120  # a run whose worker is lost mid-step fails within this


@pytest.fixture
def cluster(tmp_path: Path, s3_options: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    with running_cluster(tmp_path, s3_options, ENV) as running:
        for name in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                     "DAGSTER_PG_DB"):
            monkeypatch.setenv(name, running.env[name])
        yield running


def _wait(process: subprocess.Popen, timeout_s: float = RUN_TIMEOUT_S) -> float:
    start = time.monotonic()
    process.wait(timeout=timeout_s)
    return time.monotonic() - start


def _gpu_slots_in_use(instance: dg.DagsterInstance) -> int:
    return instance.event_log_storage.get_concurrency_info("gpu").active_slot_count


@pytest.mark.slow
def test_steps_run_on_celery_workers_and_lost_workers_fail_their_runs(cluster: Cluster, s3_options: dict[str, str],
                                                                       tmp_path: Path) -> None:
    lake = cluster.env["SAE_ASSETS_LAKE"]
    with dg.DagsterInstance.get() as instance:
        register_models(instance, [MODEL])
        names = [cluster.start_worker("cpu", 1), cluster.start_worker("gpu", 1), cluster.start_worker("gpu", 2)]
        cluster.wait_for_workers(names)

        # Two partitions at once, every step on a worker.
        launched = {layer: cluster.launch("full_pipeline", key, RUN_CONFIG, {"test/case": f"pair-{layer}"})
                    for layer, key in PARTITIONS.items()}
        for process in launched.values():
            _wait(process)
        for layer in PARTITIONS:
            assert_succeeded(instance, "test/case", f"pair-{layer}")
        runs = [run_by_tag(instance, "test/case", f"pair-{layer}") for layer in PARTITIONS]
        children = {name: set(cluster.worker_children(name)) for name in names}
        on_gpu = gpu_steps()
        for run in runs:
            placements = step_placements(instance, run.run_id)
            assert set(placements) >= on_gpu, "every gpu-pool step of full_pipeline ran"
            for step, (worker, pid) in placements.items():
                assert pid != int(run.tags["sae_assets/worker_pid"]) and pid in children[worker], (step, worker, pid)
                assert worker.startswith("gpu-") == (step in on_gpu), (step, worker)
        intervals = sorted(i for run in runs for i in step_intervals(instance, run.run_id, on_gpu))
        for (_, end, step), (start, _, later) in zip(intervals, intervals[1:], strict=False):
            assert start >= end, f"gpu steps {step} and {later} overlapped"

        # The same partitions in-process (same instance, a local lake): equal tables.
        reference = str(tmp_path / "reference-lake")
        for layer, key in PARTITIONS.items():
            process = cluster.launch("full_pipeline", key, RUN_CONFIG, {"test/case": f"ref-{layer}"},
                                     env={"SAE_ASSETS_EXECUTOR": "in_process", "SAE_ASSETS_LAKE": reference})
            _wait(process)
            assert_succeeded(instance, "test/case", f"ref-{layer}")
        assert_lakes_equal(reference, {}, lake, s3_options)

        # A worker's child killed mid-step, then a whole worker: the run fails in bounded time, naming the step
        # and the worker; nothing is written, the slot is free and a re-run gives the same rows.
        for case in ("child", "worker"):
            before = table_version(lake, "trained_sae", s3_options)
            process = cluster.launch("train_and_publish_sae", PARTITIONS[2], TRAIN_CONFIG, {"test/case": case})
            run_id, worker = wait_for_step_start(instance, "test/case", case, "trained_sae", process)
            killed_at = time.monotonic()
            if case == "child":
                for pid in cluster.worker_children(worker):
                    os.kill(pid, signal.SIGKILL)
            else:  # the worker's main process only: its children must die with it (PR_SET_PDEATHSIG)
                os.kill(cluster.workers[worker].pid, signal.SIGKILL)
            _wait(process, FAIL_BOUND_S + 30)
            assert time.monotonic() - killed_at <= FAIL_BOUND_S
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
            failures = [e for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
            assert [e.step_key for e in failures] == ["trained_sae"]
            assert "trained_sae" in failures[0].message and worker in failures[0].message, failures[0].message
            assert table_version(lake, "trained_sae", s3_options) == before, "a killed step wrote its table"
            assert _gpu_slots_in_use(instance) == 0
            rerun = cluster.launch("train_and_publish_sae", PARTITIONS[2], TRAIN_CONFIG, {"test/case": f"re-{case}"})
            _wait(rerun)
            assert_succeeded(instance, "test/case", f"re-{case}")
            assert_lakes_equal(reference, {}, lake, s3_options, tables=("trained_sae", "sae_decoder"))

        # No live gpu worker: the run says so in its log, and goes on once one starts.
        for name in [n for n in cluster.workers if n.startswith("gpu-")]:
            stop_group(cluster.workers[name])
        process = cluster.launch("train_and_publish_sae", PARTITIONS[4], TRAIN_CONFIG, {"test/case": "unserved"})
        warning = wait_for_message(instance, "test/case", "unserved", "No live Celery worker consumes queue 'gpu'",
                                   process)
        assert "python -m sae_assets.worker --queue gpu" in warning
        cluster.wait_for_workers([cluster.start_worker("gpu", 3)])
        _wait(process)
        assert_succeeded(instance, "test/case", "unserved")
