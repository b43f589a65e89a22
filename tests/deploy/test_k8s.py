"""Scale-out, as far as it can be tested here: the definitions with the k8s executor, the pod specs dagster-k8s
builds for GPU and CPU steps, and the Helm values."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

from sae_assets.definitions import defs
from sae_assets.defs.executors import executor_from_env
from tests.conftest import REPO_ROOT


def test_definitions_load_with_the_k8s_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "k8s")
    monkeypatch.setenv("SAE_ASSETS_K8S_NAMESPACE", "sae")
    executor = executor_from_env()
    assert executor.name == "k8s" and executor.config_schema is not None
    with_k8s = dg.Definitions(assets=defs.assets, jobs=defs.jobs, sensors=defs.sensors, schedules=defs.schedules,
                              asset_checks=defs.asset_checks, resources=defs.resources, executor=executor)
    assert with_k8s.resolve_job_def("full_pipeline").executor_def.name == "k8s"
    monkeypatch.setenv("SAE_ASSETS_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="must be in_process, multiprocess or k8s, not 'slurm'"):
        executor_from_env()


def _step_pod(asset: str):
    tags = defs.resolve_assets_def(asset).op.tags
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="registry.example.com/sae-assets:0.1.0", dagster_home="/opt/dagster/home"),
        args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{asset.replace('_', '-')}",
        user_defined_k8s_config=get_user_defined_k8s_config(tags))
    return job.spec.template.spec


def test_gpu_steps_request_a_gpu_and_others_do_not() -> None:
    for asset in ("trained_sae", "feature_stats", "feature_labels", "optimized_prompts"):
        pod = _step_pod(asset)
        resources = pod.containers[0].resources
        assert resources.limits["nvidia.com/gpu"] == "1" and resources.requests["nvidia.com/gpu"] == "1", asset
        assert any(t.key == "nvidia.com/gpu" for t in pod.tolerations), asset
        assert defs.resolve_assets_def(asset).op.pool == "gpu"
    for asset in ("sae_decoder", "feature_map", "alignment_scores", "explanations"):
        pod = _step_pod(asset)
        limits = (pod.containers[0].resources.limits or {}) if pod.containers[0].resources else {}
        assert "nvidia.com/gpu" not in limits and not pod.tolerations, asset
        assert defs.resolve_assets_def(asset).op.pool is None


def test_helm_values_run_the_code_location_with_the_k8s_executor() -> None:
    values = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "sae_assets.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["SAE_ASSETS_EXECUTOR"] == "k8s" and env["SAE_ASSETS_LAKE"].startswith("s3://")
    assert env["SAE_ASSETS_FILES"] == deployment["volumeMounts"][0]["mountPath"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert "[k8s]" in (REPO_ROOT / "deploy" / "Dockerfile").read_text()
