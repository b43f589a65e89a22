"""A run whose process dies never wedges the ``gpu`` pool: find such runs, fail them, free their slots.

A run killed by the kernel (OOM) or ``kill -9`` writes no failure: it stays STARTED in the instance and keeps
the concurrency slots its steps claimed, so every GPU step of later runs waits on the pool forever.

- Under ``dagster dev`` the code server marks a run whose worker process died as failed, and run monitoring
  (``dagster_home/dagster.yaml``: ``free_slots_after_run_end_seconds``) frees the slots of finished runs.
- Runs without a daemon (``dagster asset materialize``, ``dagster job execute``, ``python -m sae_assets.demo``,
  tests) are covered here. Each run that sets up the ``device`` resource (every GPU asset needs it) tags itself
  with the host and pid of its process (:func:`record_run_worker`), then :func:`reap_dead_runs` fails every
  STARTED/CANCELING run of this host whose tagged process is gone and frees its slots, and frees the slots
  still held by runs that ended. With the in-process executor (the default) resources are set up before any
  step claims a pool slot, so a run cleans up after a crashed one before its GPU steps queue on the pool. The
  demo calls it before it launches runs. By hand (the only way with the multiprocess or k8s executor, whose
  step processes set up resources after the slot is claimed):

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
from dagster._core.events import JobFailureData, RunFailureReason

log = logging.getLogger(__name__)

WORKER_HOST_TAG = "sae_assets/worker_host"
WORKER_PID_TAG = "sae_assets/worker_pid"
# A finished run still holding slots after this long has leaked them (Dagster's own daemon does the same with
# run_monitoring.free_slots_after_run_end_seconds); a run failed here is freed at once.
FINISHED_RUN_GRACE_S = 30.0
_IN_PROGRESS = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
_recorded_runs: set[str] = set()  # runs this process has tagged (a run sets its resources up more than once)
_checked_runs: set[str] = set()  # runs of this process that have reaped already


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


def record_run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Tag the run with this host and the pid of its process, when this process is it (in-process executor)
    or its direct child (a multiprocess step). Returns whether it tagged."""
    if run.run_id in _recorded_runs:
        return True
    start = run_start(instance, run.run_id)
    if start is None or start[0] not in (os.getpid(), os.getppid()):
        return False
    instance.add_run_tags(run.run_id, {WORKER_HOST_TAG: host_id(), WORKER_PID_TAG: str(start[0])})
    _recorded_runs.add(run.run_id)
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


def on_run_worker_start(context: dg.InitResourceContext) -> None:
    """Called from the ``device`` resource's setup: tag this run with its host and pid, then reap dead runs.
    Never fails the run: an error here is logged and the run goes on."""
    run, instance = context.run, context.instance
    if run is None or instance is None or run.run_id in _checked_runs:
        return
    _checked_runs.add(run.run_id)
    try:
        record_run_worker(instance, run)
        for run_id in reap_dead_runs(instance, exclude_run_id=run.run_id):
            (context.log or log).warning(f"Freed what run {run_id} held: its process was gone or it had ended")
    except Exception:  # noqa: BLE001 (recovery of other runs must never break this one)
        log.exception("Could not check for dead runs; this run goes on")


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
