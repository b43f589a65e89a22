"""The executor: one process for every step by default; a process per step, or a Kubernetes Job per step.

``SAE_ASSETS_EXECUTOR``:
- ``in_process`` (default): on a small machine a process per step costs 25-50 s per run;
- ``multiprocess``: one process per step (``SAE_ASSETS_MAX_CONCURRENT`` steps at once);
- ``celery``: steps on Celery workers (``pip install sae-assets[celery]``; :mod:`sae_assets.scale_out.celery_executor`):
  GPU steps carry the op tag ``dagster-celery/queue: gpu`` of :data:`GPU_OP_TAGS` and go to the ``gpu`` queue, the
  others to ``cpu``; workers start with ``python -m sae_assets.worker --queue gpu|cpu`` (:mod:`sae_assets.worker`);
- ``k8s``: ``dagster_k8s.k8s_job_executor``, a Kubernetes Job per step (``pip install sae-assets[k8s]``): GPU
  steps carry :data:`GPU_OP_TAGS`, so their pods request a GPU and tolerate GPU nodes; the others do not.
  ``SAE_ASSETS_K8S_NAMESPACE`` names the namespace of the step Jobs (default: the run's).
The ``gpu`` pool (one slot: ``dagster_home/dagster.yaml`` or the Helm values) keeps GPU steps one at a time.

Whichever it is, the executor is wrapped by :func:`with_run_recovery`: the run first fails the runs of this host
whose process died (OOM, ``kill -9``) and frees the pool slots they hold (:mod:`sae_assets.defs.run_recovery`),
then makes the rows of its pools that no run made yet (:mod:`sae_assets.defs.pool_limits`).
The executor is where a run starts in every launch path (CLI, UI, sensor, daemon): its ``execute`` runs once, in
the run worker, after RUN_START and before any step claims a slot, for the in-process, multiprocess, celery and
k8s executors alike (each claims slots in the run worker, inside ``execute``). The alternatives run too late or not
everywhere: a run-status sensor only with a daemon (``dagster dev`` already has run monitoring), a hook after a
step, a resource at a step's setup (and as a hidden side effect). ``execute_in_process`` swaps in its own
executor: the demo, its only user here, tags its runs and reaps before it starts them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg

from sae_assets import settings
from sae_assets.defs.pool_limits import ensure_pool_limits
from sae_assets.defs.run_recovery import on_run_start
from sae_assets.scale_out.queues import GPU_QUEUE, QUEUE_TAG

if TYPE_CHECKING:  # annotations only: Dagster exports no public name for these execute() argument types
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan
    from dagster._core.execution.retries import RetryMode
    from dagster._core.execution.step_dependency_config import StepDependencyConfig

GPU_POOL = "gpu"
# dagster-celery reads the queue tag when it sends a step; dagster-k8s the k8s config when it builds a step's pod:
# one GPU, on nodes tainted for GPUs.
GPU_OP_TAGS = {
    QUEUE_TAG: GPU_QUEUE,
    "dagster-k8s/config": {
        "container_config": {"resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "32Gi"},
                                           "limits": {"nvidia.com/gpu": "1", "memory": "64Gi"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                            "node_selector": {"nvidia.com/gpu.present": "true"}},
    }
}


class RunRecoveryExecutor(dg.Executor):
    """``inner``, after :func:`~sae_assets.defs.run_recovery.on_run_start` and
    :func:`~sae_assets.defs.pool_limits.ensure_pool_limits` at the start of the run."""

    def __init__(self, inner: dg.Executor) -> None:
        self.inner = inner

    def execute(self, plan_context: PlanOrchestrationContext,
                execution_plan: ExecutionPlan) -> Iterator[dg.DagsterEvent]:
        on_run_start(plan_context.instance, plan_context.dagster_run, plan_context.log)
        pools = {step.pool for step in execution_plan.get_steps_to_execute_in_topo_order() if step.pool}
        ensure_pool_limits(plan_context.instance, pools, plan_context.log)
        yield from self.inner.execute(plan_context, execution_plan)

    def __getattr__(self, name: str) -> object:
        # What an executor's own loop asks of plan_context.executor (dagster-celery: app_args()) is the inner's.
        return getattr(self.inner, name)

    @property
    def retries(self) -> RetryMode:
        return self.inner.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self.inner.step_dependency_config


def with_run_recovery(executor_def: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """``executor_def`` (same name, config and requirements) whose runs reap dead runs before their steps."""
    create = executor_def.executor_creation_fn
    if create is None:
        raise ValueError(f"executor {executor_def.name!r} has no creation function")
    return dg.ExecutorDefinition(
        name=executor_def.name,
        # The schema object as is (a configured executor's carries its config mapping), as Dagster's own
        # copy_for_configured passes it; the constructor's annotation only lists user-facing schema types.
        config_schema=executor_def.config_schema,  # type: ignore[arg-type]
        requirements=executor_def.get_requirements,
        executor_creation_fn=lambda init_context: RunRecoveryExecutor(create(init_context)),
        description=executor_def.description,
    )


def executor_from_env() -> dg.ExecutorDefinition:
    """The executor ``SAE_ASSETS_EXECUTOR`` names, wrapped by :func:`with_run_recovery`."""
    return with_run_recovery(_chosen_executor())


def _chosen_executor() -> dg.ExecutorDefinition:
    kind = settings.executor_kind()  # in_process, multiprocess, celery or k8s (ValueError otherwise)
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent(kind)})
    if kind == "celery":
        try:
            from sae_assets.scale_out.celery_executor import celery_executor_from_settings
        except ImportError as err:
            raise ImportError(f"{settings.EXECUTOR}=celery needs dagster-celery: pip install "
                              "'sae-assets[celery]'") from err
        return celery_executor_from_settings()
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as err:
        raise ImportError(f"{settings.EXECUTOR}=k8s needs dagster-k8s: pip install 'sae-assets[k8s]'") from err
    config: dict[str, int | str] = {"max_concurrent": settings.max_concurrent(kind)}
    if namespace := settings.nonempty(settings.K8S_NAMESPACE):
        config["job_namespace"] = namespace
    return k8s_job_executor.configured(config)
