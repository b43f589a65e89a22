"""The Dagster UI as users start it: `dagster dev` on 127.0.0.1 with a fresh DAGSTER_HOME, a partition of the
embedded default launched through GraphQL, then the asset graph and the partition page in headless Chromium.
Screenshots and the server log are kept in test-artifacts/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
import requests
from dagster._core.instance.ref import InstanceRef

from sae_assets.defs.partitions import register_models
from tests.browser import browser_page, free_port, screenshot, serving
from tests.conftest import REPO_ROOT

MODEL = "smollm2-135m@demo-res"
PARTITION = f"2|{MODEL}"
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = """query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
NODES = """{ assetNodes { assetKey { path } partitionKeysByDimension { name partitionKeys } } }"""
# Little training: this test is about the UI; the SAE's quality is the demo's and trained_sae's tests' concern.
TRAIN = {"training_tokens": 4096, "eval_tokens": 1024, "epochs": 1.0, "context_size": 64, "batch_size": 256}


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    reply = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    reply.raise_for_status()
    body = reply.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def launch_partition(url: str) -> str:
    params = {
        "selector": {"repositoryLocationName": "sae_assets", "repositoryName": "__repository__",
                     "jobName": "train_and_publish_sae"},
        "runConfigData": {"ops": {"trained_sae": {"config": TRAIN}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION},
                                       {"key": "dagster/partition/layer", "value": "2"},
                                       {"key": "dagster/partition/model", "value": MODEL}]},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for_run(url: str, run_id: str, timeout_s: float = 420) -> str:
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    return f"still {status} after {timeout_s:.0f} s"


@pytest.mark.slow
def test_launch_a_partition_and_see_it_in_the_ui(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    register_models(dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))), [MODEL])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"DAGSTER_HOME": str(home), "SAE_ASSETS_LAKE": str(tmp_path / "lake"),
           "SAE_ASSETS_SAE_DROP": str(tmp_path / "sae_drop"),
           "SAE_ASSETS_AUTOMATION": "stopped",  # only the launched run: no automation runs on 2 cores
           "SAE_ASSETS_MIN_EXPLAINED_VARIANCE": "0"}  # 16 training steps: the EV floor is not under test
    with serving(["-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
                 f"{url}/server_info", timeout_s=180, env=env, log_name="dagster-dev.log"):
        nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(url, NODES)["assetNodes"]}
        assert {"trained_sae", "sae_decoder", "feature_stats", "feature_map", "alignment_report"} <= set(nodes)
        dims = {d["name"]: d["partitionKeys"] for d in nodes["sae_decoder"]["partitionKeysByDimension"]}
        assert MODEL in dims["model"] and dims["layer"][:3] == ["0", "1", "2"]

        run_id = launch_partition(url)
        assert wait_for_run(url, run_id) == "SUCCESS", f"run {run_id}: see test-artifacts/dagster-dev.log"

        with browser_page(1400, 900) as page:
            page.goto(f"{url}/locations/sae_assets/asset-groups/sae")
            skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit newsletter dialog
            try:
                skip.click(timeout=20_000)
            except Exception:  # noqa: BLE001 (no dialog this time)
                pass
            page.wait_for_selector("text=trained_sae", timeout=60_000)
            page.wait_for_selector("text=sae_decoder", timeout=30_000)
            screenshot(page, "ui-asset-graph.png")

            page.goto(f"{url}/assets/sae_decoder?view=partitions&partition={quote(PARTITION)}")
            page.wait_for_selector(f"text={PARTITION}", timeout=60_000)
            page.wait_for_selector("text=Materialized (1)", timeout=30_000)
            page.wait_for_selector(f"text={run_id[:8]}", timeout=30_000)  # the run that materialized it
            page.wait_for_selector("text=input_table_versions", timeout=30_000)  # lineage metadata
            screenshot(page, "ui-partition.png")
            assert not [e for e in page.errors if "favicon" not in e and "Failed to load resource" not in e], \
                page.errors
