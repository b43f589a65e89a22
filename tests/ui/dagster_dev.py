"""`dagster dev` as the UI tests start it: a fresh DAGSTER_HOME holding the project's ``dagster.yaml`` (run queue,
the one-slot ``gpu`` pool, run monitoring), the webserver and the daemon on 127.0.0.1, a lake and drop folder under
the test's tmp_path, automation stopped; GraphQL helpers, and a hard time limit for a whole test."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import dagster as dg
import requests
from dagster._core.instance.ref import InstanceRef

from sae_assets.catalog import load_catalog
from sae_assets.defs.partitions import register_models
from tests.browser import free_port, serving
from tests.conftest import REPO_ROOT

REPOSITORY = {"repositoryLocationName": "sae_assets", "repositoryName": "__repository__"}
# Little training (16 steps of 256): these tests are about Dagster's machinery; the SAE's quality is the demo's and
# trained_sae's tests' concern.
TINY_TRAINING = {"training_tokens": 4096, "eval_tokens": 1024, "epochs": 1.0, "context_size": 64, "batch_size": 256}
TERMINAL_RUN_STATUSES = ("SUCCESS", "FAILURE", "CANCELED")
RUN_STATUS = """query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message cause { message stack } } } } } } }"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """The ``data`` of a GraphQL request to the webserver at ``url``; fails on GraphQL errors."""
    reply = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    reply.raise_for_status()
    body = reply.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@dataclass(frozen=True)
class DagsterDev:
    """A running ``dagster dev``: its base ``url``, its DAGSTER_HOME and the lake root its runs write."""

    url: str
    home: Path
    lake: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.url, query, variables)

    def instance(self) -> dg.DagsterInstance:
        """The same instance, opened in this process (SQLite storages under ``home``)."""
        return open_instance(self.home)


def open_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


@contextmanager
def dagster_dev(tmp_path: Path, models: list[str], catalog: Path | None = None, env: dict[str, str] | None = None,
                log_name: str = "dagster-dev.log", timeout_s: float = 180) -> Iterator[DagsterDev]:
    """``dagster dev`` with a fresh home under ``tmp_path`` whose ``models`` partitions hold ``models``; ``catalog``
    (default: the packaged one) is passed as SAE_ASSETS_CATALOG. Its whole process group (webserver, daemon, code
    server, run workers) is stopped on the way out; its output is ``test-artifacts/<log_name>``."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    drop, lake = tmp_path / "sae_drop", tmp_path / "lake"
    register_models(open_instance(home), models, load_catalog(catalog, drop) if catalog is not None else None)
    port = free_port()
    full_env = {"DAGSTER_HOME": str(home), "SAE_ASSETS_LAKE": str(lake), "SAE_ASSETS_SAE_DROP": str(drop),
                "SAE_ASSETS_AUTOMATION": "stopped",  # only the runs a test launches: no automation on 2 cores
                "SAE_ASSETS_MIN_EXPLAINED_VARIANCE": "0",  # TINY_TRAINING: the EV floor is not under test
                **({"SAE_ASSETS_CATALOG": str(catalog)} if catalog is not None else {}), **(env or {})}
    url = f"http://127.0.0.1:{port}"
    with serving(["-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)], f"{url}/server_info",
                 timeout_s=timeout_s, env=full_env, log_name=log_name):
        assert_location_loaded(url)
        yield DagsterDev(url=url, home=home, lake=lake)


def assert_location_loaded(url: str, timeout_s: float = 120) -> None:
    """Fail with the code location's load error (a broken import or definition), not later with an empty graph."""
    def entry() -> dict:
        entries = graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
        return next((e for e in entries if e["name"] == REPOSITORY["repositoryLocationName"]), {"loadStatus": None})

    status = wait_until(lambda: entry()["loadStatus"], lambda s: s == "LOADED", timeout_s, every_s=1)
    location = entry().get("locationOrLoadError") or {}
    cause = location.get("cause") or {}
    assert status == "LOADED" and location.get("__typename") == "RepositoryLocation", \
        f"the code location sae_assets did not load ({status}): {location.get('message')}\n" \
        f"{''.join((cause.get('stack') or [])[-3:])}{cause.get('message')}"


def wait_until(poll: Callable[[], str], done: Callable[[str], bool], timeout_s: float, every_s: float = 2.0) -> str:
    """Call ``poll`` until ``done`` of its answer; its last answer, or ``still <answer> after <timeout>``."""
    deadline = time.monotonic() + timeout_s
    answer = ""
    while time.monotonic() < deadline:
        answer = poll()
        if done(answer):
            return answer
        time.sleep(every_s)
    return f"still {answer} after {timeout_s:.0f} s"


def wait_for_run(url: str, run_id: str, timeout_s: float = 420) -> str:
    """The run's final status (SUCCESS, FAILURE, CANCELED), or ``still <status> after <timeout>``."""
    return wait_until(lambda: graphql(url, RUN_STATUS, {"id": run_id})["runOrError"]["status"],
                      lambda status: status in TERMINAL_RUN_STATUSES, timeout_s)


@contextmanager
def hard_timeout(seconds: int, what: str) -> Iterator[None]:
    """Raise ``TimeoutError`` in the test (main thread) after ``seconds``, wherever it is blocked, so context
    managers inside (``dagster_dev``) stop their processes; cancelled on the way out."""
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
