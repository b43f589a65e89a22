"""A crash never wedges the platform: a run killed with ``kill -9`` while its GPU step holds the ``gpu`` pool's
only slot is marked failed and its slot freed, so the next run's GPU step runs, and no data is lost.

``crash_probe`` is a tiny GPU-pool asset on the real model × layer partitions that uses the real ``device``
resource and writes through the real Delta storage; its runs use the platform's executor, which reaps at the
start of every run. The module is also the code location the killed CLI run and ``dagster dev`` load
(``-f tests/defs/test_run_recovery.py``)."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dagster as dg
import polars as pl
import pytest
from dagster._core.instance.ref import InstanceRef

from sae_assets.defs.executors import GPU_POOL, RunRecoveryExecutor, executor_from_env, with_run_recovery
from sae_assets.defs.partitions import MODEL_PARTITIONS_NAME, model_and_layer, model_layer_partitions
from sae_assets.defs.run_recovery import (
    WORKER_HOST_TAG,
    dead_run_message,
    host_id,
    on_run_start,
    process_is_gone,
    reap_dead_runs,
    run_worker_tags,
)
from sae_assets.resources.device import DeviceResource
from sae_assets.storage.delta import read_partition, table_uri, write_partition

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "crash-test@tiny"


class ProbeConfig(dg.Config):
    lake_root: str
    hang_s: float = 0.0  # a long GPU step: the test kills the run's process while it sleeps
    started_file: str = ""  # written once the step runs (it then holds its pool slot)


@dg.asset(partitions_def=model_layer_partitions, pool=GPU_POOL)
def crash_probe(context: dg.AssetExecutionContext, config: ProbeConfig, device: DeviceResource) -> None:
    model, layer = model_and_layer(context.partition_key)
    if config.started_file:
        Path(config.started_file).write_text(str(os.getpid()))
    time.sleep(config.hang_s)
    df = pl.DataFrame({"feature": [0, 1, 2], "value": [float(layer)] * 3, "device": [device.device] * 3})
    write_partition(df, table_uri(config.lake_root, "crash_probe"), model, layer)


# The platform's default executor (SAE_ASSETS_EXECUTOR=in_process, wrapped to reap at run start): the run's
# process runs its steps.
defs = dg.Definitions(assets=[crash_probe], resources={"device": DeviceResource(device="cpu", dtype="float32")},
                      executor=with_run_recovery(dg.in_process_executor))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml (the gpu pool of one slot, run monitoring)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        instance.add_dynamic_partitions(MODEL_PARTITIONS_NAME, [MODEL])
    return home


def run_config(**config) -> dict:
    return {"ops": {"crash_probe": {"config": config}}}


def cli_materialize(layer: int, config: dict) -> list[str]:
    return [sys.executable, "-m", "dagster", "asset", "materialize", "-f", __file__, "--select", "crash_probe",
            "--partition", f"{layer}|{MODEL}", "--config-json", json.dumps(run_config(**config))]


def gpu_pool(instance: dg.DagsterInstance) -> tuple[set[str], set[str]]:
    """Runs holding a gpu slot, runs with a step waiting for one."""
    info = instance.event_log_storage.get_concurrency_info(GPU_POOL)
    return {s.run_id for s in info.claimed_slots}, {s.run_id for s in info.pending_steps}


def wait_for_gpu_slot(instance: dg.DagsterInstance, proc: subprocess.Popen, started: Path, log: Path,
                      timeout_s: float) -> str:
    """The id of the run that holds the gpu slot once its step runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        holders, _ = gpu_pool(instance)
        if started.exists() and holders:
            return holders.pop()
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before its step ran:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"no run held the gpu slot after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def kill_while_it_holds_the_slot(instance: dg.DagsterInstance, proc: subprocess.Popen, started: Path,
                                 log: Path) -> str:
    """Once ``proc``'s run holds the gpu slot (and recovery leaves it alone, being alive), ``kill -9`` it; the run's
    id. The process is reaped whatever happens."""
    try:
        killed = wait_for_gpu_slot(instance, proc, started, log, timeout_s=120)
        assert reap_dead_runs(instance, dry_run=True) == []  # a live run of another process is left alone
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return killed


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(e.dagster_event.message or "" for e in instance.all_logs(
        run_id, of_type=dg.DagsterEventType.RUN_FAILURE))


def test_process_is_gone_only_for_dead_or_reused_pids() -> None:
    assert not process_is_gone(os.getpid(), time.time())  # this process, running
    assert process_is_gone(os.getpid(), 0.0)  # a process started after the run: the run's pid was reused
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert process_is_gone(done.pid, time.time())


def test_a_killed_run_is_failed_its_gpu_slot_freed_and_nothing_is_lost(tmp_path: Path, home: Path) -> None:
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    lake = str(tmp_path / "lake")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # A partition committed before the crash.
    first = dg.materialize([crash_probe], partition_key=f"1|{MODEL}", instance=instance,
                           resources={"device": DeviceResource(device="cpu")}, run_config=run_config(lake_root=lake))
    assert first.success

    # A CLI run whose GPU step is killed (-9) while it holds the pool's only slot: nothing records its death.
    started, log = tmp_path / "started", tmp_path / "killed-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cli_materialize(2, {"lake_root": lake, "hang_s": 120, "started_file": str(started)}),
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    killed = kill_while_it_holds_the_slot(instance, proc, started, log)
    pid = int(started.read_text())
    assert proc.pid == pid  # the CLI process ran the step (in-process executor)
    assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED
    assert gpu_pool(instance)[0] == {killed}  # the wedge

    # Only a run of this host is reaped.
    instance.add_run_tags(killed, {WORKER_HOST_TAG: "another-host"})
    assert reap_dead_runs(instance, dry_run=True) == []
    instance.add_run_tags(killed, {WORKER_HOST_TAG: host_id()})
    assert reap_dead_runs(instance, dry_run=True) == [killed]

    # The next CLI run of a GPU step (the crashed partition again) is not blocked: its executor reaps first.
    rerun = subprocess.run(cli_materialize(2, {"lake_root": lake}), cwd=REPO_ROOT, env=env, timeout=180,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
    assert dead_run_message(pid) in failure_message(instance, killed)
    assert gpu_pool(instance) == (set(), set())
    latest = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": f"2|{MODEL}"}), limit=1)[0]
    assert latest.dagster_run.run_id != killed and latest.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert any(killed in (e.message or "") for e in instance.all_logs(latest.dagster_run.run_id))

    # Nothing committed before the crash is lost, and the crashed partition is written by its re-run.
    uri = table_uri(lake, "crash_probe")
    assert read_partition(uri, MODEL, 1)["value"].to_list() == [1.0, 1.0, 1.0]
    assert read_partition(uri, MODEL, 2)["value"].to_list() == [2.0, 2.0, 2.0]


def test_every_executor_of_the_platform_reaps_first_and_keeps_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "in_process")
    in_process = executor_from_env()
    assert in_process.name == "in_process" and in_process is not dg.in_process_executor
    assert in_process.config_schema is dg.in_process_executor.config_schema
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "multiprocess")
    monkeypatch.setenv("SAE_ASSETS_MAX_CONCURRENT", "3")
    multiprocess = executor_from_env()
    assert multiprocess.name == "multiprocess"
    assert multiprocess.apply_config_mapping({}).value["config"]["max_concurrent"] == 3  # .configured() kept
    assert multiprocess.get_requirements({}) == dg.multiprocess_executor.get_requirements({})
    # The wrapped executor reaps once and makes its pools' rows, before the executor it wraps runs (and claims
    # slots for) any step.
    calls: list[str] = []

    def steps(*_: object) -> Iterator[str]:
        calls.append("steps")
        yield "step events"

    inner = mock.create_autospec(dg.Executor, instance=True)
    inner.execute.side_effect = steps
    plan = mock.Mock()
    plan.get_steps_to_execute_in_topo_order.return_value = [mock.Mock(pool="gpu"), mock.Mock(pool=None)]
    with (mock.patch("sae_assets.defs.executors.on_run_start", lambda *_: calls.append("reaped")),
          mock.patch("sae_assets.defs.executors.ensure_pool_limits",
                     lambda _, pools, __: calls.append(f"pools {sorted(pools)}"))):
        assert list(RunRecoveryExecutor(inner).execute(mock.Mock(), plan)) == ["step events"]
    assert calls == ["reaped", "pools ['gpu']", "steps"]


def test_recovery_never_fails_the_run_that_starts(caplog: pytest.LogCaptureFixture) -> None:
    broken = mock.Mock(spec=dg.DagsterInstance)
    broken.get_records_for_run.side_effect = OSError("run storage is gone")
    with caplog.at_level(logging.ERROR):
        assert on_run_start(broken, dg.DagsterRun(job_name="analyze_sae")) == []
    assert "Could not check for dead runs" in caplog.text


PROBE_IN_PROCESS = """import json, sys
import dagster as dg
from sae_assets.defs.run_recovery import run_worker_tags
from sae_assets.resources.device import DeviceResource
from tests.defs.test_run_recovery import MODEL, crash_probe, run_config
dg.materialize([crash_probe], partition_key=f"4|{MODEL}", instance=dg.DagsterInstance.get(), tags=run_worker_tags(),
               resources={"device": DeviceResource(device="cpu")}, run_config=run_config(**json.loads(sys.argv[1])))
"""


def test_a_killed_in_process_run_tagged_as_the_demo_tags_it_is_reaped(tmp_path: Path, home: Path) -> None:
    # execute_in_process (the demo's runs) swaps in its own executor, so the demo tags its runs itself.
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    started, log = tmp_path / "started", tmp_path / "killed-run.log"
    config = {"lake_root": str(tmp_path / "lake"), "hang_s": 120, "started_file": str(started)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", PROBE_IN_PROCESS, json.dumps(config)], cwd=REPO_ROOT,
                                env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=out, stderr=subprocess.STDOUT)
    killed = kill_while_it_holds_the_slot(instance, proc, started, log)
    run = instance.get_run_by_id(killed)
    assert run is not None and run.tags[WORKER_HOST_TAG] == run_worker_tags()[WORKER_HOST_TAG]
    assert reap_dead_runs(instance) == [killed]
    assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
    assert gpu_pool(instance) == (set(), set())


REPOS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"""


def launch_hanging_run(url: str, lake: str, started: Path) -> str:
    from tests.ui.test_dagster_ui import LAUNCH, graphql

    repo = graphql(url, REPOS)["repositoriesOrError"]["nodes"][0]
    params = {
        "selector": {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"],
                     "jobName": "__ASSET_JOB"},
        "runConfigData": run_config(lake_root=lake, hang_s=120, started_file=str(started)),
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": f"3|{MODEL}"},
                                       {"key": "dagster/partition/layer", "value": "3"},
                                       {"key": "dagster/partition/model", "value": MODEL}]},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


@pytest.mark.slow
def test_under_dagster_dev_a_killed_run_is_failed_and_run_monitoring_frees_its_slot(tmp_path: Path,
                                                                                    home: Path) -> None:
    from tests.browser import free_port, serving

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = tmp_path / "started"
    env = {"DAGSTER_HOME": str(home)}
    with serving(["-m", "dagster", "dev", "-f", __file__, "-h", "127.0.0.1", "-p", str(port)],
                 f"{url}/server_info", timeout_s=120, env=env, log_name="dagster-dev-run-recovery.log"):
        run_id = launch_hanging_run(url, str(tmp_path / "lake"), started)
        deadline = time.monotonic() + 120
        while not (started.exists() and gpu_pool(instance)[0] == {run_id}):
            assert time.monotonic() < deadline, "the run's step never held the gpu slot"
            time.sleep(0.5)
        os.kill(int(started.read_text()), signal.SIGKILL)  # the run worker, a child of the code server
        # The code server fails the run at once; the monitoring daemon frees its slot (poll 15 s + 10 s after end).
        deadline = time.monotonic() + 60
        while instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.FAILURE or gpu_pool(instance)[0]:
            assert time.monotonic() < deadline, (instance.get_run_by_id(run_id).status, gpu_pool(instance))
            time.sleep(1)
    messages = [e.message or "" for e in instance.all_logs(run_id)]
    assert any("was terminated by signal 9" in m for m in messages), messages[-5:]
