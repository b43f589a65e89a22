"""A backfill through Celery workers against the same backfill in-process: wall time, dispatch overhead, queue waits.

    .venv/bin/python benchmarks/scale_out.py [--partitions 6] [--max-runs 3] [--configs in_process,celery-1,celery-2]
                                            [--record benchmarks/results/<date>-scale-out.md]

Each configuration gets its own PostgreSQL instance and redis-server on 127.0.0.1 (``tests/deploy/cluster.py``,
``deploy/celery/dagster.yaml`` as it ships) and runs ``full_pipeline`` (``trained_sae`` + the ``analyze_sae`` steps,
tests/deploy/test_celery.py's tiny budgets) for ``--partitions`` layers of a catalog entry shaped like
``smollm2-135m@demo-res``, launched as a backfill launches them: one ``dagster job execute`` process per run, at most
``--max-runs`` at once.

- ``in_process``: every step in its run's process, the lake a local folder;
- ``celery-N``: ``SAE_ASSETS_EXECUTOR=celery``, N ``gpu`` workers and one ``cpu`` worker, the lake on a moto S3
  server; the ``gpu`` pool set to N slots (``dagster instance concurrency set gpu N``), one per gpu worker.

From each run's event log, per step on a worker: *dispatch* is from when the step could start there (the run's
"Submitting celery task" event, and that worker done with its previous step: its STEP_SUCCESS) to the worker's
"Executing steps ... in celery worker" event; *queue wait* is how long it was submitted while its worker was still
busy; *setup* is from that event to STEP_START. *gpu hand-off* is a ``gpu`` step's dispatch counted from when its
upstream steps in the run had ended (or the run started) instead of its submission: it adds the run noticing that
end and claiming a ``gpu`` pool slot, which it holds before it submits (dagster-celery logs no event while it waits).
*busy* is the share of the wall time a queue's workers spent from their event to the step's end.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from sae_assets.defs.executors import GPU_POOL  # noqa: E402
from sae_assets.defs.partitions import register_models  # noqa: E402
from sae_assets.scale_out.queues import CPU_QUEUE, GPU_QUEUE  # noqa: E402
from tests.deploy.cluster import Cluster, running_cluster  # noqa: E402
from tests.deploy.run_events import CELERY_WORKER  # noqa: E402
from tests.deploy.test_celery import ENV, RUN_CONFIG  # noqa: E402
from tests.s3_server import moto_s3  # noqa: E402

SHAPE = "smollm2-135m@demo-res"
MODEL = "smollm2-135m@bench-res"
SUBMIT = "Submitting celery task for step"
DISPATCH_TARGET_S = 1.0
SUCCESS = dg.DagsterRunStatus.SUCCESS
STEP_FAILURE = dg.DagsterEventType.STEP_FAILURE
Figures = dict[str, float]


def write_catalog(path: Path, layers: list[int]) -> None:
    """The shipped ``smollm2-135m@demo-res`` entry (trained TopK SAEs) as ``MODEL``, with ``layers``."""
    shipped = yaml.safe_load((ROOT / "sae_assets" / "catalog" / "catalog.yaml").read_text())["models"][SHAPE]
    entry = {**shipped, "description": f"{SHAPE} at layers {layers} (benchmarks/scale_out.py)", "layers": layers}
    path.write_text(yaml.safe_dump({"models": {MODEL: entry}}))


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """tests/s3_server.py's moto server, without a log line per request."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with moto_s3() as options:
        yield options


@dataclass(frozen=True)
class StepTiming:
    """One step run on a Celery worker: event-log timestamps (seconds since the epoch, one host's clock)."""

    step: str
    worker: str
    ready: float  # its upstream steps in the run ended (or the run started)
    sent: float
    executing: float
    started: float
    ended: float


def step_timings(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[StepTiming]:
    """Every step of the run that a worker ran to its end."""
    sent: dict[str, float] = {}
    executing: dict[str, tuple[float, str]] = {}
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    run_start = float("inf")
    for entry in instance.all_logs(run.run_id):
        event, step = entry.dagster_event, entry.step_key
        if event is not None and event.event_type == dg.DagsterEventType.RUN_START:
            run_start = entry.timestamp
        if event is None or step is None:
            continue
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
            metadata = event.engine_event_data.metadata
            if entry.message.startswith(SUBMIT):
                sent[step] = entry.timestamp
            elif CELERY_WORKER in metadata:
                executing[step] = (entry.timestamp, str(metadata[CELERY_WORKER].value))
        elif event.event_type == dg.DagsterEventType.STEP_START:
            started[step] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, STEP_FAILURE):
            ended[step] = entry.timestamp
    plan = instance.get_execution_plan_snapshot(str(run.execution_plan_snapshot_id))
    upstream = {snap.key: {key for i in snap.inputs for key in i.upstream_step_keys} for snap in plan.steps}
    ready = {s: max([run_start, *(ended.get(u, run_start) for u in upstream.get(s, ()))]) for s in sent}
    return [StepTiming(s, executing[s][1], ready[s], sent[s], executing[s][0], started[s], ended[s])
            for s in sent if s in executing and s in started and s in ended]


def dispatch_figures(timings: list[StepTiming], wall: float, gpu_workers: int) -> Figures:
    """Dispatch, queue wait, setup and gpu hand-off (seconds), each worker's steps taken in the order it ran them;
    the share of the wall time each queue's workers spent in steps (worker event to step end)."""
    dispatch, waits, setup, handoff = [], [], [], []
    busy = {queue: sum(t.ended - t.executing for t in timings if t.worker.startswith(f"{queue}-")) / (wall * n)
            for queue, n in ((GPU_QUEUE, gpu_workers), (CPU_QUEUE, 1))}
    for worker in {t.worker for t in timings}:
        previous_end = 0.0
        for t in sorted((t for t in timings if t.worker == worker), key=lambda t: t.executing):
            dispatch.append(t.executing - max(t.sent, previous_end))
            waits.append(max(0.0, previous_end - t.sent))
            setup.append(t.started - t.executing)
            if worker.startswith(f"{GPU_QUEUE}-"):
                handoff.append(t.executing - max(t.ready, previous_end))
            previous_end = t.ended
    return {"steps": len(dispatch), "dispatch_median": float(np.median(dispatch)),
            "dispatch_p95": float(np.percentile(dispatch, 95)), "wait_median": float(np.median(waits)),
            "wait_p95": float(np.percentile(waits, 95)), "wait_max": float(max(waits)),
            "setup_median": float(np.median(setup)), "handoff_median": float(np.median(handoff or [np.nan])),
            "handoff_p95": float(np.percentile(handoff or [np.nan], 95)), "busy_gpu": busy[GPU_QUEUE],
            "busy_cpu": busy[CPU_QUEUE]}


def failures(instance: dg.DagsterInstance, runs: Sequence[dg.DagsterRun]) -> list[str]:
    """What failed in the runs that did not succeed: each failed step's error, else the run's."""
    lines = []
    for run in (r for r in runs if r.status != SUCCESS):
        for entry in instance.all_logs(run.run_id, of_type={STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}):
            error = getattr(entry.dagster_event.event_specific_data, "error", None) if entry.dagster_event else None
            text = (error.message if error else entry.message).strip().splitlines()
            lines.append(f"layer {run.tags['bench/layer']} ({run.status.value}), {entry.step_key or 'run'}: "
                         f"{text[-1] if text else ''}"[:400])
    return lines


def run_backfill(cluster: Cluster, layers: list[int], max_runs: int, env: dict[str, str]) -> float:
    """Every layer's run, at most ``max_runs`` at once; the wall time from the first launch to the last end."""
    pending: list[int] = list(layers)
    running: list[subprocess.Popen] = []
    start = time.monotonic()
    while pending or running:
        running = [p for p in running if p.poll() is None]
        while pending and len(running) < max_runs:
            layer = pending.pop(0)
            running.append(cluster.launch("full_pipeline", f"{layer}|{MODEL}", RUN_CONFIG,
                                          {"bench/layer": str(layer)}, env=env))
        time.sleep(0.2)
    return time.monotonic() - start


def start_workers(cluster: Cluster, instance: dg.DagsterInstance, gpu_workers: int) -> None:
    """``gpu_workers`` gpu workers and one cpu worker, answering; the gpu pool at one slot per gpu worker."""
    instance.event_log_storage.set_concurrency_slots(GPU_POOL, gpu_workers)
    names = [cluster.start_worker(GPU_QUEUE, i + 1) for i in range(gpu_workers)] + [cluster.start_worker(CPU_QUEUE, 1)]
    cluster.wait_for_workers(names)


def measure(config: str, layers: list[int], max_runs: int, catalog: Path, s3: dict[str, str]) -> Figures:
    """One configuration's backfill in a fresh instance; its wall time and, on workers, the dispatch figures."""
    gpu_workers = 0 if config == "in_process" else int(config.removeprefix("celery-"))
    root = Path(tempfile.mkdtemp(prefix=f"scale-out-{config}-"))
    env = {**ENV, "SAE_ASSETS_CATALOG": str(catalog), "SAE_ASSETS_LAKE": f"s3://lake/{config}"}
    if not gpu_workers:
        env |= {"SAE_ASSETS_EXECUTOR": "in_process", "SAE_ASSETS_LAKE": str(root / "lake")}
    with running_cluster(root, s3, env) as cluster:
        os.environ.update({k: v for k, v in cluster.env.items() if k.startswith("DAGSTER") or k.startswith("SAE_")})
        with dg.DagsterInstance.get() as instance:
            register_models(instance, [MODEL])
            if gpu_workers:
                start_workers(cluster, instance, gpu_workers)
            print(f"{config}: {len(layers)} runs, at most {max_runs} at once (logs in {root})", file=sys.stderr)
            wall = run_backfill(cluster, layers, max_runs, {})
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"bench/layer": [str(x) for x in layers]}))
            problems = failures(instance, runs)
            for line in problems:
                print(f"{config}: {line}", file=sys.stderr)
            figures: Figures = {"wall_s": wall, "failed": len(layers) - sum(r.status == SUCCESS for r in runs)}
            if gpu_workers:
                figures |= dispatch_figures([t for r in runs for t in step_timings(instance, r)], wall,
                                            gpu_workers)
            else:
                figures["steps"] = sum(len(list(instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START)))
                                       for r in runs)
    if not figures["failed"]:
        shutil.rmtree(root, ignore_errors=True)
    return figures


def cpu_description() -> str:
    """CPU model, core count and the flags that decide torch's kernels (bf16 or float32 products)."""
    model, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags {' '.join(shown) or 'none of avx2/avx512/amx'}"


def table(results: dict[str, Figures]) -> str:
    base = results.get("in_process", {}).get("wall_s")
    rows = ["| executor | wall s | vs in_process | steps | dispatch median / p95 s | queue wait median / p95 / max s "
            "| setup median s | gpu hand-off median / p95 s | busy gpu / cpu workers |", "|---" * 9 + "|"]
    for config, r in results.items():
        ratio = f"{r['wall_s'] / base:.2f}x" if base else "n/a"
        wall = f"{r['wall_s']:.0f}" + (f" ({r['failed']:.0f} runs failed)" if r["failed"] else "")
        cells = [config, wall, ratio, f"{r['steps']:.0f}"]
        if "dispatch_median" in r:
            cells += [f"{r['dispatch_median']:.2f} / {r['dispatch_p95']:.2f}",
                      f"{r['wait_median']:.1f} / {r['wait_p95']:.1f} / {r['wait_max']:.1f}", f"{r['setup_median']:.2f}",
                      f"{r['handoff_median']:.2f} / {r['handoff_p95']:.2f}",
                      f"{r['busy_gpu']:.0%} / {r['busy_cpu']:.0%}"]
        else:
            cells += [""] * 5
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def notes(args: argparse.Namespace) -> str:
    return f"""- {args.partitions} partitions of `full_pipeline` at tests/deploy/test_celery.py's tiny budgets (cpu
  budget profile, device cpu, explained-variance floor 0), launched as a backfill launches them: one process per run,
  at most {args.max_runs} at once. Every process (runs, workers) has OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1, as
  the test has.
- Dispatch target: median <= {DISPATCH_TARGET_S:.0f} s. Queue wait is the workers' backlog, not an overhead. The gpu
  hand-off adds the run's polling (dagster-celery's loop ticks every 1 s) and its gpu pool claim (a blocked claim is
  retried after 1 s, backing off to 15 s).
- On {os.cpu_count()} cores the workers, the runs' orchestrating processes, PostgreSQL, Redis and the S3 server share
  the same cores: the speed-up of a second `gpu` worker is bounded by the cores, not by the workers; the ratios say
  what the Celery path costs here, not what more hosts would give.
"""


def record(args: argparse.Namespace, results: dict[str, Figures]) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return (f"# Celery workers against in-process: a backfill of {args.partitions} partitions "
            f"({time.strftime('%Y-%m-%d')})\n\n- Host: {socket.gethostname()}, {cpu_description()}; code "
            f"{commit.stdout.strip()}.\n- Command: `.venv/bin/python benchmarks/scale_out.py --partitions "
            f"{args.partitions} --max-runs {args.max_runs} --configs {args.configs}`.\n\n{table(results)}\n"
            f"{notes(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=6, help="layers 1..N of the benchmark's catalog entry")
    parser.add_argument("--max-runs", type=int, default=3, help="runs at once, as a backfill's limit")
    parser.add_argument("--configs", default="in_process,celery-1,celery-2")
    parser.add_argument("--record", type=Path, default=None, help="also write the table as a markdown record here")
    args = parser.parse_args()
    configs = args.configs.split(",")
    unknown = [c for c in configs if c != "in_process" and not (c.startswith("celery-") and c[7:].isdigit())]
    if unknown:
        parser.error(f"unknown configurations {unknown}: in_process or celery-N")
    layers = list(range(1, args.partitions + 1))
    results: dict[str, Figures] = {}
    with s3_server() as s3, tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog.yaml"
        write_catalog(catalog, layers)
        for config in configs:
            results[config] = measure(config, layers, args.max_runs, catalog, s3)
            print(f"{config}: {results[config]}", file=sys.stderr, flush=True)
    print(table(results))
    print(notes(args))
    if args.record:
        args.record.write_text(record(args, results))


if __name__ == "__main__":
    main()
