"""Scale-out on Kubernetes, as far as it can be tested without a cluster: the definitions with the k8s executor,
the step Jobs that executor's step handler (``dagster_k8s.executor.K8sStepHandler``) builds for every step of a
``full_pipeline`` run, and the Helm values.

The step Jobs come from Dagster's own run-time path: the executor ``executor_from_env()`` makes with
``SAE_ASSETS_EXECUTOR=k8s`` (its ``inner`` is the ``StepDelegatingExecutor`` holding the handler), the execution
plan of a run of a real partition of the embedded catalog, the executor's own step-handler contexts and
``launch_step``. The Kubernetes API is a recorder that keeps the ``V1Job`` bodies it is asked to create.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes.client
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import deserialize_value
from dagster_k8s.executor import K8sStepHandler
from kubernetes.client import V1Job, V1PodSpec

from sae_assets.definitions import defs
from sae_assets.defs.executors import RunRecoveryExecutor, executor_from_env
from sae_assets.defs.partitions import partition_key, register_models
from tests.conftest import REPO_ROOT

VALUES = REPO_ROOT / "deploy" / "k8s" / "values.yaml"
# The user deployment's image (values.yaml), which its code server reports in a run's origin (DAGSTER_CURRENT_IMAGE).
IMAGE = "registry.example.com/sae-assets:0.1.0"
NAMESPACE = "sae"  # SAE_ASSETS_K8S_NAMESPACE: the step Jobs' namespace, not the run launcher's
MODEL, LAYER = "smollm2-135m@demo-res", 4
GPU = "nvidia.com/gpu"
# Every gpu-pool asset of full_pipeline (activation_scan's op writes feature_stats); the test fails if any of
# them stops being gpu-pooled or leaves the job, and derives the rest from the ops' pools.
GPU_ASSETS = ("trained_sae", "feature_stats", "feature_labels", "optimized_prompts", "logit_effects", "sae_evals")
KUBECONFIG = {  # a cluster that is never contacted: the API client is the recorder below
    "apiVersion": "v1", "kind": "Config", "current-context": "test",
    "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "test", "user": {"token": "unused"}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
}


class RecordingBatchApi:
    """Stands in for ``kubernetes.client.BatchV1Api``: keeps the Jobs the step handler creates."""

    def __init__(self) -> None:
        self.created: list[tuple[str, V1Job]] = []

    def create_namespaced_job(self, body: V1Job, namespace: str, **_: Any) -> V1Job:
        self.created.append((namespace, body))
        return body


def _full_pipeline_with_k8s() -> dg.JobDefinition:
    """``full_pipeline`` as the code location defines it when ``SAE_ASSETS_EXECUTOR=k8s`` is set at import."""
    with_k8s = dg.Definitions(assets=defs.assets, jobs=defs.jobs, sensors=defs.sensors, schedules=defs.schedules,
                              asset_checks=defs.asset_checks, resources=defs.resources, executor=executor_from_env())
    return with_k8s.resolve_job_def("full_pipeline")


def test_definitions_load_with_the_k8s_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "k8s")
    monkeypatch.setenv("SAE_ASSETS_K8S_NAMESPACE", NAMESPACE)
    executor = executor_from_env()
    assert executor.name == "k8s" and executor.config_schema is not None
    job = _full_pipeline_with_k8s()
    assert job.executor_def.name == "k8s"
    config = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
    assert config["job_namespace"] == NAMESPACE and config["max_concurrent"] > 0
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="must be"):
        executor_from_env()


@pytest.fixture
def k8s_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance with the K8sRunLauncher as the Helm chart configures it (envSecrets from values.yaml)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    secrets = yaml.safe_load(VALUES.read_text())["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    launcher = {"service_account_name": "dagster", "instance_config_map": "dagster-instance",
                "postgres_password_secret": "dagster-postgresql-secret", "dagster_home": "/opt/dagster/dagster_home",
                "job_namespace": "dagster", "env_secrets": [s["name"] for s in secrets],
                "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    with dg.instance_for_test(overrides={"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher",
                                                          "config": launcher}}) as instance:
        yield instance


def _step_jobs(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
               ) -> tuple[ExecutionPlan, dg.DagsterRun, list[tuple[str, V1Job]]]:
    """The Jobs the k8s executor's step handler creates for every step of a ``full_pipeline`` run."""
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "k8s")
    monkeypatch.setenv("SAE_ASSETS_K8S_NAMESPACE", NAMESPACE)
    api = RecordingBatchApi()
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", lambda api_client=None: api)
    job_def = _full_pipeline_with_k8s()
    # The run's origin as the code server (`dagster api grpc --module-name sae_assets.definitions`) reports it.
    repo = ReconstructableRepository(ModuleCodePointer("sae_assets.definitions", "defs", None),
                                     container_image=IMAGE, entry_point=["dagster"])
    recon_job = ReconstructableJob(repo, "full_pipeline")

    register_models(instance, [MODEL])
    key = partition_key(MODEL, LAYER)
    tags = job_def.get_tags_for_partition_key(str(key), selected_asset_keys=None)
    plan = create_execution_plan(recon_job, run_config={}, tags=tags, instance_ref=instance.get_ref())
    run = instance.create_run_for_job(job_def, execution_plan=plan, tags=tags,
                                      job_code_origin=recon_job.get_python_origin())
    # What create_executor does at run time, with the run config's executor config.
    executor = job_def.executor_def.executor_creation_fn(InitExecutorContext(
        job=recon_job, executor_def=job_def.executor_def, instance=instance,
        executor_config=ResolvedRunConfig.build(job_def, {}).execution.execution_engine_config))
    assert isinstance(executor, RunRecoveryExecutor) and isinstance(executor.inner, StepDelegatingExecutor)
    inner = executor.inner
    handler = inner._step_handler  # noqa: SLF001
    assert isinstance(handler, K8sStepHandler)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(job=recon_job, dagster_run=run, instance=instance, execution_plan=plan,
                           retry_mode=inner.retries),
        log_manager=create_context_free_log_manager(instance, run), executor=executor, output_capture=None)
    active = ActiveExecution(plan, inner.retries)
    for step in plan.get_all_steps_in_topo_order():
        context = inner._get_step_handler_context(plan_context, [step], active)  # noqa: SLF001
        events = list(handler.launch_step(context))
        assert [e.event_type_value for e in events] == ["STEP_WORKER_STARTING"], step.key
    return plan, run, api.created


def _gpu_ops(job_def: dg.JobDefinition) -> set[str]:
    return {name for name, node in job_def.graph.node_dict.items() if node.definition.pool == "gpu"}


def _assert_gpu_pod(pod: V1PodSpec, step: str) -> None:
    resources = pod.containers[0].resources
    assert resources is not None, step
    assert (resources.requests or {}).get(GPU) == "1" and (resources.limits or {}).get(GPU) == "1", step
    tolerations = pod.tolerations or []
    assert any(t.key == GPU and t.effect == "NoSchedule" and t.operator == "Exists" for t in tolerations), step
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}, step


def _assert_cpu_pod(pod: V1PodSpec, step: str) -> None:
    resources = pod.containers[0].resources
    for amounts in (resources.requests, resources.limits) if resources else ():
        assert GPU not in (amounts or {}), step
    assert not pod.tolerations and not pod.node_selector, step


def test_every_step_pod_is_built_by_the_k8s_step_handler(k8s_instance: dg.DagsterInstance,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    plan, run, created = _step_jobs(k8s_instance, monkeypatch)
    steps = [s.key for s in plan.get_all_steps_in_topo_order()]
    assert len(created) == len(steps) == len(set(steps))
    gpu_ops = _gpu_ops(_full_pipeline_with_k8s())
    for asset in GPU_ASSETS:
        assets_def = defs.resolve_assets_def(asset)
        assert assets_def.op.pool == "gpu" and assets_def.op.name in gpu_ops, asset
    assert {defs.resolve_assets_def(a).op.name for a in GPU_ASSETS} == gpu_ops  # no other gpu op in the job

    for step, (namespace, job) in zip(steps, created, strict=True):
        assert namespace == NAMESPACE, step
        pod = job.spec.template.spec
        container = pod.containers[0]
        assert container.image == IMAGE and job.metadata.labels["dagster/op"] == step
        (_assert_gpu_pod if plan.get_step_by_key(step).op_name in gpu_ops else _assert_cpu_pod)(pod, step)
        # The command is Dagster's execute_step; its arguments travel in the env, compressed.
        assert container.args == ["dagster", "api", "execute_step"], step
        env = {e.name: e for e in container.env}
        assert env["DAGSTER_RUN_JOB_NAME"].value == "full_pipeline" and env["DAGSTER_RUN_STEP_KEY"].value == step
        assert env["DAGSTER_HOME"].value == "/opt/dagster/dagster_home"
        assert env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref.name == "dagster-postgresql-secret"
        args = deserialize_value(zlib.decompress(base64.b64decode(
            env["DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"].value)).decode(), ExecuteStepArgs)
        assert args.step_keys_to_execute == [step] and args.run_id == run.run_id
        assert args.job_origin.job_name == "full_pipeline"
        assert args.job_origin.repository_origin.code_pointer.module == "sae_assets.definitions"
        assert [s.secret_ref.name for s in container.env_from] == ["sae-assets-credentials"], step
    assert run.tags["dagster/partition"] == str(partition_key(MODEL, LAYER))


def test_helm_values_run_the_code_location_with_the_k8s_executor() -> None:
    values = yaml.safe_load(VALUES.read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "sae_assets.definitions"]
    assert f"{deployment['image']['repository']}:{deployment['image']['tag']}" == IMAGE
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["SAE_ASSETS_EXECUTOR"] == "k8s" and env["SAE_ASSETS_LAKE"].startswith("s3://")
    assert int(env["SAE_ASSETS_MAX_CONCURRENT"]) > 0
    assert env["SAE_ASSETS_FILES"] == deployment["volumeMounts"][0]["mountPath"]
    assert deployment["volumes"][0]["name"] == deployment["volumeMounts"][0]["name"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert "[k8s]" in (REPO_ROOT / "deploy" / "Dockerfile").read_text()
