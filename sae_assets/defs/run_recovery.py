"""A run whose process dies never wedges the ``gpu`` pool: find such runs, fail them, free their slots.

A run killed by the kernel (OOM) or ``kill -9`` writes no failure: it stays STARTED in the instance and keeps
the concurrency slots its steps claimed, so every GPU step of later runs waits on the pool forever.

- Under ``dagster dev`` the code server marks a run whose worker process died as failed, and run monitoring
  (``dagster_home/dagster.yaml``: ``free_slots_after_run_end_seconds``) frees the slots of finished runs.
- Runs without a daemon (``dagster asset materialize``, ``dagster job execute``, ``python -m sae_assets.demo``,
  tests) are covered here. At the start of every run, before any step claims a pool slot, the location's
  executor (:func:`sae_assets.defs.executors.with_run_recovery`, whatever ``SAE_ASSETS_EXECUTOR`` picks) calls
  :func:`on_run_start`: it tags the run with the host and pid of its process (:func:`record_run_worker`), then
  :func:`reap_dead_runs` fails every STARTED/CANCELING run of this host whose tagged process is gone and frees
  its slots, and frees the slots still held by runs that ended. ``execute_in_process`` swaps in its own
  executor: the demo tags its runs with :func:`run_worker_tags` and reaps once before it launches them. By
  hand (e.g. for a run of another host):

      python -m sae_assets.defs.run_recovery [--dry-run]           # reap dead runs of this host
      python -m sae_assets.defs.run_recovery --run-id ID --force   # fail ID and free its slots, no questions

A run is reaped only when it is proven dead: its tags name this host (and pid namespace) and the pid that started
it (its RUN_START event's), and that process no longer exists, is a zombie, or is a newer process that reused the
pid. Runs of other hosts, untagged runs and live runs of other processes (another CLI run, ``dagster dev``) are
left alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

import dagster as dg

# Private on purpose: report_run_failed takes the failure reason only as JobFailureData, and Dagster exports
# neither it nor RunFailureReason; UNEXPECTED_TERMINATION (as Dagster's own run monitoring reports a dead run)
# sets the run's dagster/failure_reason tag, which run retries read.
from dagster._core.events import JobFailureData, RunFailureReason

log = logging.getLogger(__name__)

WORKER_HOST_TAG = "sae_assets/worker_host"
WORKER_PID_TAG = "sae_assets/worker_pid"
# A finished run still holding slots after this long has leaked them (Dagster's own daemon does the same with
# run_monitoring.free_slots_after_run_end_seconds); a run failed here is freed at once.
FINISHED_RUN_GRACE_S = 30.0
_IN_PROGRESS = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def dead_run_message(pid: int) -> str:
    return (f"run process {pid} is gone (killed?): marked failed and its gpu concurrency slots freed; "
            "re-run the partition")


def run_start(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the process that started the run and when (its RUN_START event), or None before it started."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event else None
    return (pid, entry.timestamp) if pid else None


def host_id() -> str:
    """This host, and the pid namespace pids are valid in (containers on one host each have their own)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()} {namespace}"


def _process_state(pid: int) -> tuple[str, float] | None:
    """(state letter, start time as a Unix timestamp) of a process from /proc, or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_is_gone(pid: int, started_at: float) -> bool:
    """True only when the process that was ``pid`` at ``started_at`` surely no longer runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    state = _process_state(pid)
    if state is None:
        return False  # exists, and there is nothing to tell a reused pid by
    letter, created = state
    # A zombie never runs again; a process created after the run started reused the pid.
    return letter in ("Z", "X") or created > started_at + 2.0


def run_worker_tags() -> dict[str, str]:
    """The tags that name this process as a run's worker: for runs this process starts and runs itself
    (``execute_in_process``, whose own executor does not tag)."""
    return {WORKER_HOST_TAG: host_id(), WORKER_PID_TAG: str(os.getpid())}


def record_run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Tag the run with this host and the pid of this process when this process started it (its RUN_START
    event's pid: the run worker, where the executor runs). Returns whether it tagged."""
    start = run_start(instance, run.run_id)
    if start is None or start[0] != os.getpid():
        return False
    instance.add_run_tags(run.run_id, run_worker_tags())
    return True


def _dead_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the run's process when it ran on this host and is gone, else None."""
    if run.tags.get(WORKER_HOST_TAG) != host_id():
        return None
    start = run_start(instance, run.run_id)
    if start is None or str(start[0]) != run.tags.get(WORKER_PID_TAG):
        return None  # e.g. tags copied from a re-executed parent run: not this run's process
    return start[0] if process_is_gone(*start) else None


def fail_run(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str) -> None:
    """Mark the run failed with ``message`` and free every concurrency slot and pending step it holds."""
    instance.report_run_failed(run, message, JobFailureData(
        error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
    free_slots(instance, run.run_id)


def free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def _slot_holders(instance: dg.DagsterInstance) -> set[str]:
    """Runs holding a concurrency slot or waiting for one."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return set()
    holders: set[str] = set()
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        holders |= {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}
    return holders


def reap_dead_runs(instance: dg.DagsterInstance, exclude_run_id: str | None = None,
                   dry_run: bool = False) -> list[str]:
    """Fail the in-progress runs of this host whose process is gone and free their slots; free the slots
    finished runs still hold. Returns the ids of the runs failed or freed."""
    reaped = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=_IN_PROGRESS), limit=1000):
        run = record.dagster_run
        if run.run_id == exclude_run_id:
            continue
        pid = _dead_worker(instance, run)
        if pid is None:
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:  # it ended on its own between the two reads
            continue
        log.warning("Run %s: %s", run.run_id, dead_run_message(pid))
        if not dry_run:
            fail_run(instance, current, dead_run_message(pid))
        reaped.append(run.run_id)
    now = time.time()
    for run_id in sorted(_slot_holders(instance) - {exclude_run_id} - set(reaped)):
        holder = instance.get_run_record_by_id(run_id)
        if holder is not None and not holder.dagster_run.is_finished:
            continue
        if holder is not None and now - (holder.end_time or holder.update_timestamp.timestamp()) < FINISHED_RUN_GRACE_S:
            continue
        log.warning("Run %s ended (%s) but still held concurrency slots: freed", run_id,
                    holder.dagster_run.status.value if holder else "deleted")
        if not dry_run:
            free_slots(instance, run_id)
        reaped.append(run_id)
    return reaped


def on_run_start(instance: dg.DagsterInstance, run: dg.DagsterRun, run_log: logging.Logger | None = None) -> list[str]:
    """At the start of ``run``, in its worker process: tag the run with its host and pid, then reap dead runs
    (``run_log`` says which, in the run's own log). Never fails the run: an error is logged and the run goes on.
    Returns the ids of the runs failed or freed."""
    try:
        record_run_worker(instance, run)
        reaped = reap_dead_runs(instance, exclude_run_id=run.run_id)
    except Exception:  # noqa: BLE001 (recovery of other runs must never break this one)
        log.exception("Could not check for dead runs; this run goes on")
        return []
    for run_id in reaped:
        (run_log or log).warning(f"Freed what run {run_id} held: its process was gone or it had ended")
    return reaped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_assets.defs.run_recovery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="say what would be reaped, change nothing")
    parser.add_argument("--run-id", help="with --force: fail this run (if not finished) and free its slots")
    parser.add_argument("--force", action="store_true", help="do not check the run's process (another host...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with dg.DagsterInstance.get() as instance:
        if args.run_id:
            if not args.force:
                parser.error("--run-id needs --force: it fails the run without checking its process")
            run = instance.get_run_by_id(args.run_id)
            if run is None:
                parser.error(f"no run {args.run_id} in {instance.root_directory}")
            if not run.is_finished:
                fail_run(instance, run, "marked failed by hand (python -m sae_assets.defs.run_recovery --force); "
                         "its concurrency slots freed; re-run the partition")
            free_slots(instance, run.run_id)
            updated = instance.get_run_by_id(run.run_id)
            log.info("Run %s: %s, slots freed", run.run_id, updated.status.value if updated else "deleted")
            return 0
        reaped = reap_dead_runs(instance, dry_run=args.dry_run)
        log.info("%s %d run(s): %s", "Would reap" if args.dry_run else "Reaped", len(reaped), reaped or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
