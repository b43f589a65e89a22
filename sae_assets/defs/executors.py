"""The executor: one process for every step by default; a process per step, or a Kubernetes Job per step.

``SAE_ASSETS_EXECUTOR``:
- ``in_process`` (default): on a small machine a process per step costs 25-50 s per run;
- ``multiprocess``: one process per step (``SAE_ASSETS_MAX_CONCURRENT`` steps at once);
- ``k8s``: ``dagster_k8s.k8s_job_executor``, a Kubernetes Job per step (``pip install sae-assets[k8s]``): GPU
  steps carry :data:`GPU_OP_TAGS`, so their pods request a GPU and tolerate GPU nodes; the others do not.
  ``SAE_ASSETS_K8S_NAMESPACE`` names the namespace of the step Jobs (default: the run's).
The ``gpu`` pool (one slot: ``dagster_home/dagster.yaml`` or the Helm values) keeps GPU steps one at a time.
"""

import dagster as dg

from sae_assets import settings

GPU_POOL = "gpu"
# dagster-k8s reads this op tag when it builds a step's pod: one GPU, on nodes tainted for GPUs.
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "32Gi"},
                                           "limits": {"nvidia.com/gpu": "1", "memory": "64Gi"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                            "node_selector": {"nvidia.com/gpu.present": "true"}},
    }
}


def executor_from_env() -> dg.ExecutorDefinition:
    kind = settings.executor_kind()  # in_process, multiprocess or k8s (ValueError otherwise)
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent(kind)})
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as err:
        raise ImportError(f"{settings.EXECUTOR}=k8s needs dagster-k8s: pip install 'sae-assets[k8s]'") from err
    config: dict[str, int | str] = {"max_concurrent": settings.max_concurrent(kind)}
    if namespace := settings.nonempty(settings.K8S_NAMESPACE):
        config["job_namespace"] = namespace
    return k8s_job_executor.configured(config)
