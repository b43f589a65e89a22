"""The Dagster UI as users start it: the README's `dagster dev` (tests/readme_clone.py: a fresh DAGSTER_HOME in a
clean-clone folder), a partition of the embedded default launched through GraphQL, then the asset graph and the
partition page in headless Chromium. Screenshots and the server log are kept in test-artifacts/."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.browser import browser_page, screenshot
from tests.ui.dagster_dev import REPOSITORY, TINY_TRAINING, DagsterDev, graphql, hard_timeout, wait_for_run

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
NODES = """{ assetNodes { assetKey { path } partitionKeysByDimension { name partitionKeys } } }"""


def launch_partition(url: str) -> str:
    params = {
        "selector": {**REPOSITORY, "jobName": "train_and_publish_sae"},
        "runConfigData": {"ops": {"trained_sae": {"config": TINY_TRAINING}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION},
                                       {"key": "dagster/partition/layer", "value": "2"},
                                       {"key": "dagster/partition/model", "value": MODEL}]},
    }
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


@pytest.mark.slow
def test_launch_a_partition_and_see_it_in_the_ui(readme_dagster_dev: DagsterDev) -> None:
    with hard_timeout(900, "the UI test"):
        url = readme_dagster_dev.url
        nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(url, NODES)["assetNodes"]}
        assert {"trained_sae", "sae_decoder", "feature_stats", "feature_map", "alignment_report"} <= set(nodes)
        dims = {d["name"]: d["partitionKeys"] for d in nodes["sae_decoder"]["partitionKeysByDimension"]}
        assert MODEL in dims["model"] and dims["layer"][:3] == ["0", "1", "2"]

        run_id = launch_partition(url)
        assert wait_for_run(url, run_id) == "SUCCESS", f"run {run_id}: see test-artifacts/readme-dagster-dev.log"

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
