"""A Celery worker for the platform's steps (``SAE_ASSETS_EXECUTOR=celery``), one command per role:

    python -m sae_assets.worker --queue gpu    # on each GPU host: the gpu-pool steps (LM, SAE training, scans)
    python -m sae_assets.worker --queue cpu    # anywhere: every other step

A worker reads the broker from ``SAE_ASSETS_CELERY_BROKER`` (and ``SAE_ASSETS_CELERY_BACKEND``) and needs what a run
needs: this package at the same version, the same ``SAE_ASSETS_*`` settings (catalog, lake, files, device) and
credentials (``AWS_*``, ``HF_TOKEN``, the instance's Postgres password). Each step runs in a child process of the
worker, against the run's instance (the run sends its reference) and lake. A child dies with its worker
(``PR_SET_PDEATHSIG`` on Linux): a step whose worker was lost never writes after its run failed.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import socket
import sys

from celery import Celery
from celery.signals import worker_process_init

from sae_assets.scale_out.celery_executor import celery_app
from sae_assets.scale_out.queues import CPU_QUEUE, GPU_QUEUE

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(**_: object) -> None:
    """In a worker's child process: be killed when the worker dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): a step may outlive its worker", ctypes.get_errno())


def worker_app() -> Celery:
    """The runs' Celery app with dagster-celery's step task registered."""
    from dagster_celery.tasks import create_task
    app = celery_app()
    create_task(app)
    return app


def worker_argv(queue: str, name: str, concurrency: int, loglevel: str,
                max_tasks_per_child: int | None) -> list[str]:
    argv = ["worker", "--queues", queue, "--hostname", name, "--concurrency", str(concurrency),
            "--loglevel", loglevel, "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle"]
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    return argv


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sae_assets.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", choices=(GPU_QUEUE, CPU_QUEUE), required=True,
                        help="gpu: the gpu-pool steps (one worker per GPU); cpu: every other step")
    parser.add_argument("--name", default=None,
                        help="the worker's Celery hostname (default: <queue>-<n>@<host>, n from --index)")
    parser.add_argument("--index", type=int, default=1, help="tells workers of one queue on one host apart")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="steps at once (child processes); keep 1 on a gpu worker: one GPU, one step")
    parser.add_argument("--max-tasks-per-child", type=int, default=None,
                        help="replace a child after this many steps (default: keep it, and its loaded models)")
    parser.add_argument("--loglevel", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
    name = args.name or f"{args.queue}-{args.index}@{socket.gethostname()}"
    # The code location, imported once before the children fork: they start steps without importing the stack
    # (seconds per child on a small machine), and a location that cannot load stops the worker here, not per step.
    import sae_assets.definitions  # noqa: F401
    worker_process_init.connect(die_with_parent, weak=False)
    app = worker_app()
    app.worker_main(worker_argv(args.queue, name, args.concurrency, args.loglevel, args.max_tasks_per_child))


if __name__ == "__main__":
    main()
