"""The code location as users start it: packaging, the defs folder, instance config, and `dagster dev`."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef

from sae_assets.definitions import defs
from sae_assets.defs.partitions import model_layer_partitions, partition_key
from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_dagster_family_pinned_to_one_version() -> None:
    pins = {d.split("==")[0]: d.split("==")[1] for d in PYPROJECT["project"]["dependencies"] if "==" in d}
    family = {k: v for k, v in pins.items() if k.startswith("dagster")}
    assert {"dagster", "dagster-webserver"} <= set(family)
    assert len(set(family.values())) == 1 and family["dagster"] == dg.__version__


def test_workspace_and_dg_project_name_the_same_location() -> None:
    # `dagster dev -w workspace.yaml` and plain `dagster dev` read workspace.yaml; `dg` reads [tool.dg.project]. CLI
    # backfills fail with "Location ... does not exist" when the two names differ.
    (entry,) = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    project = PYPROJECT["tool"]["dg"]["project"]
    assert "dagster" not in PYPROJECT["tool"]  # no third place ([tool.dagster]) naming it
    assert entry["python_module"] == {"module_name": project["code_location_target_module"],
                                      "location_name": project["code_location_name"]}
    assert project["code_location_target_module"] == "sae_assets.definitions"
    assert project["code_location_name"] == "sae_assets"


def test_definitions_load_every_object_in_the_defs_folder() -> None:
    # Nothing is listed by hand: each module-level asset, job, sensor and schedule under defs/ is in the location.
    import importlib
    import pkgutil

    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

    import sae_assets.defs

    found: dict[str, set[str]] = {"assets": set(), "jobs": set(), "sensors": set(), "schedules": set()}
    for info in pkgutil.walk_packages(sae_assets.defs.__path__, "sae_assets.defs."):
        for value in vars(importlib.import_module(info.name)).values():
            if isinstance(value, dg.AssetsDefinition) and not isinstance(value, dg.AssetChecksDefinition):
                found["assets"] |= {k.to_user_string() for k in value.keys}
            elif isinstance(value, UnresolvedAssetJobDefinition):
                found["jobs"].add(value.name)
            elif isinstance(value, dg.SensorDefinition):
                found["sensors"].add(value.name)
            elif isinstance(value, dg.ScheduleDefinition):
                found["schedules"].add(value.name)
    repo = defs.get_repository_def()
    assert found["assets"] == {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert found["jobs"] <= {job.name for job in repo.get_all_jobs()}
    assert found["sensors"] == {s.name for s in repo.sensor_defs}
    assert found["schedules"] == {s.name for s in repo.schedule_defs}
    assert found["jobs"], "the walk found no job under defs/"  # the subset check above holds for none
    assert set(defs.resources or {}) >= {"lake", "device", "corpus", "language_model", "neuronpedia"}


def test_instance_config_has_a_gpu_pool_of_one(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path)))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert instance.root_directory == str(tmp_path)


def test_definitions_and_partition_keys() -> None:
    repo = defs.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= {"trained_sae", "sae_decoder"}
    assert defs.resolve_assets_def("trained_sae").op.pool == "gpu"
    key = partition_key("smollm2-135m@demo-res", 4)
    assert str(key) == "4|smollm2-135m@demo-res"  # Dagster orders dimensions by name
    assert model_layer_partitions.get_partition_key_from_str(str(key)).keys_by_dimension == {
        "model": "smollm2-135m@demo-res", "layer": "4"}


def test_jobs_split_model_layer_assets_from_model_reports() -> None:
    full = defs.resolve_job_def("full_pipeline")
    keys = {k.to_user_string() for k in full.asset_layer.executable_asset_keys}
    assert {"trained_sae", "feature_clusters", "optimized_prompts", "alignment_scores", "sae_evals"} <= keys
    assert not {"alignment_report", "sae_eval_report"} & keys
    reports = defs.resolve_job_def("model_reports")
    assert {k.to_user_string() for k in reports.asset_layer.executable_asset_keys} == {"alignment_report",
                                                                                       "sae_eval_report"}
    # Pretrained SAEs: the same assets without training; a trained SAE's pipeline is trained_sae + analyze_sae.
    analyze = {k.to_user_string() for k in defs.resolve_job_def("analyze_sae").asset_layer.executable_asset_keys}
    assert analyze == keys - {"trained_sae"} and "sae_decoder" in analyze


def test_every_asset_has_description_owner_kinds_and_code_version() -> None:
    from sae_assets.definitions import defs

    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        assert spec.description and spec.owners == ["team:interpretability"], name
        assert "delta" in spec.kinds and spec.code_version, name
