"""deploy/celery's layout on one machine, for tests and benchmarks/scale_out.py: PostgreSQL (the instance),
redis-server (the broker), an S3 lake (moto, started by the caller) and Celery workers, each on 127.0.0.1 at a
free port, each process in its own session so that :meth:`Cluster.close` stops it and every child it forked.

The instance is ``deploy/celery/dagster.yaml`` as it ships; the processes get the environment a deployment's
hosts get (``deploy/celery/sae-assets.env``'s names) with this machine's values.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from celery import Celery

from tests.browser import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy" / "celery"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def _binary(name: str) -> str:
    found = shutil.which(name) or (str(POSTGRES_BIN / name) if (POSTGRES_BIN / name).exists() else None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: the scale-out test needs redis-server (bash scripts/setup "
                           "installs it) and PostgreSQL 15 (initdb, pg_ctl)")
    return found


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv  # initdb refuses root


@contextmanager
def postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL server with an empty ``dagster`` database; yields the ``DAGSTER_PG_*`` environment."""
    data = Path(tempfile.mkdtemp(prefix="sae-assets-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([_binary("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres",
                                 "--no-sync"]), check=True, capture_output=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off -c max_connections=200"
    subprocess.run(_as_postgres([_binary("pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-o", options,
                                 "-w", "start"]), check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                     "dagster"]), check=True, capture_output=True)
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": "postgres",
               "DAGSTER_PG_PASSWORD": "unused-trust-auth", "DAGSTER_PG_DB": "dagster"}
    finally:
        subprocess.run(_as_postgres([_binary("pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def redis() -> Iterator[str]:
    """redis-server without persistence; yields its URL."""
    port = free_port()
    process = subprocess.Popen([_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Stop ``process`` and everything in its session: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the children left behind, if any
    except ProcessLookupError:
        pass
    process.wait()


@dataclass
class Cluster:
    """The running servers and workers, and the environment every process of the deployment gets."""

    root: Path
    env: dict[str, str]
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def broker(self) -> str:
        return self.env["SAE_ASSETS_CELERY_BROKER"]

    def start_worker(self, queue: str, index: int) -> str:
        """``python -m sae_assets.worker --queue <queue>`` (README's command); its Celery hostname."""
        name = f"{queue}-{index}@{socket.gethostname()}"
        log = open(self.root / f"worker-{queue}-{index}.log", "ab")  # noqa: SIM115 - the process holds it
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "sae_assets.worker", "--queue", queue, "--index", str(index)],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return name

    def wait_for_workers(self, names: list[str], timeout_s: float = 180.0) -> None:
        app = Celery(broker=self.broker, backend=self.broker)
        deadline = time.monotonic() + timeout_s
        missing = set(names)
        while missing:
            replies = app.control.ping(destination=sorted(missing), timeout=1.0) or []
            missing -= {name for reply in replies for name in reply}
            for name in missing:
                if self.workers[name].poll() is not None:
                    raise RuntimeError(f"worker {name} exited: {self.worker_log(name)[-2000:]}")
            if missing and time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(missing)} did not answer within {timeout_s:.0f} s")

    def worker_log(self, name: str) -> str:
        queue, index = name.split("@")[0].rsplit("-", 1)
        return (self.root / f"worker-{queue}-{index}.log").read_text(errors="replace")

    def worker_children(self, name: str) -> list[int]:
        try:
            return [p.pid for p in psutil.Process(self.workers[name].pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def launch(self, job: str, partition: str, run_config: dict, tags: dict[str, str],
               env: dict[str, str] | None = None) -> subprocess.Popen:
        """``dagster job execute`` of ``job`` for ``partition``: the run is orchestrated in that process."""
        label = "-".join(f"{v}" for v in tags.values()).replace("|", "_").replace("@", "_")
        config = self.root / f"run-{label}.yaml"
        config.write_text(json.dumps(run_config))
        log = open(self.root / f"run-{label}.log", "ab")  # noqa: SIM115 - the process holds it
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "job", "execute", "-m", "sae_assets.definitions", "-j", job,
             "-c", str(config), "--tags", json.dumps({"dagster/partition": partition, **tags})],
            cwd=REPO_ROOT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in [*self.processes, *self.workers.values()]:
            stop_group(process)


def dagster_home(root: Path) -> Path:
    """A DAGSTER_HOME holding deploy/celery/dagster.yaml as it ships."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    return home


@contextmanager
def running_cluster(root: Path, s3_options: dict[str, str], extra_env: dict[str, str] | None = None
                    ) -> Iterator[Cluster]:
    """Postgres and Redis up, the environment set; workers are started by the caller."""
    with ExitStack() as stack:
        pg_env = stack.enter_context(postgres())
        broker = stack.enter_context(redis())
        env = {**os.environ, **pg_env, **s3_options,
               "DAGSTER_HOME": str(dagster_home(root)),
               "SAE_ASSETS_EXECUTOR": "celery",
               "SAE_ASSETS_CELERY_BROKER": broker,
               "SAE_ASSETS_LAKE": "s3://lake/sae",
               "SAE_ASSETS_FILES": str(root / "files"),
               "SAE_ASSETS_SAE_DROP": str(root / "drop"),
               **(extra_env or {})}
        cluster = Cluster(root=root, env=env)
        stack.callback(cluster.close)
        yield cluster
