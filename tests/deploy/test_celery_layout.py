"""deploy/celery as shipped: its instance file loads, its environment names only settings the platform reads,
and every worker command it and the README give is one the worker accepts (the slow test runs the same one)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from dagster._core.instance.config import dagster_instance_config

from sae_assets import settings
from sae_assets.worker import argument_parser
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "celery"
PG_NAMES = {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}


def _env_names() -> set[str]:
    lines = (DEPLOY / "sae-assets.env").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line.strip() and not line.startswith("#")}


def test_the_instance_file_is_valid_and_reads_postgres_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    db = config["storage"]["postgres"]["postgres_db"]
    assert {v["env"] for k, v in db.items() if isinstance(v, dict)} == PG_NAMES
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_the_environment_file_names_settings_the_platform_reads() -> None:
    names = _env_names()
    assert PG_NAMES <= names and {"DAGSTER_HOME", settings.EXECUTOR, settings.CELERY_BROKER, settings.LAKE,
                                  settings.FILES} <= names
    assert names - PG_NAMES <= set(settings.BY_NAME), names - PG_NAMES - set(settings.BY_NAME)
    executor = next(line for line in (DEPLOY / "sae-assets.env").read_text().splitlines()
                    if line.startswith(settings.EXECUTOR))
    assert executor.split("=", 1)[1].split()[0] == "celery"


def _worker_args(command: str) -> list[str]:
    """The worker's arguments in a unit's ExecStart (``%i``: a GPU index) or the README (``<GPU>``)."""
    argv = shlex.split(command.replace("%i", "0").replace("<GPU>", "0"))
    return argv[argv.index("sae_assets.worker") + 1:]


def test_every_worker_command_of_the_units_and_the_readme_is_one_the_worker_takes() -> None:
    units = {p.name: p.read_text() for p in (DEPLOY / "systemd").glob("*.service")}
    assert set(units) == {"sae-assets-webserver.service", "sae-assets-daemon.service",
                          "sae-assets-gpu-worker@.service", "sae-assets-cpu-worker.service"}
    commands = [re.search(r"^ExecStart=(.*)$", text, re.M).group(1) for text in units.values()]  # type: ignore[union-attr]
    workers = [c for c in commands if "sae_assets.worker" in c]
    readme = re.findall(r"`(python -m sae_assets\.worker[^`]*)`", (REPO_ROOT / "README.md").read_text())
    assert len(workers) == 2 and len(readme) == 2
    queues = [argument_parser().parse_args(_worker_args(command)).queue for command in workers + readme]
    assert sorted(queues) == ["cpu", "cpu", "gpu", "gpu"]
    assert all("EnvironmentFile=/opt/sae-assets/sae-assets.env" in text for text in units.values())
    assert all("-m sae_assets.definitions" in c for c in commands if "dagster" in c)
    assert yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["storage"]["postgres"]

