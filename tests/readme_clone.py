"""A folder laid out like a clean clone after the demo, and the README's servers started in it as written (a pytest
plugin: session fixtures ``readme_clone``, ``readme_ports`` and ``readme_dagster_dev``).

The clone links the venv and the package and copies the top-level files; its lake holds every table a feature page
reads (the viewer tests' small lake, under the demo's model key and layer 6) and its instance has the demo's model
partitions. One `dagster dev`, started by the README's own command, serves the README test and the UI test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import polars as pl
import pytest

from sae_assets.defs.partitions import register_models
from sae_assets.resources.lake import LakeResource
from tests.browser import free_port, serving_command
from tests.conftest import REPO_ROOT
from tests.readme_commands import readme_blocks
from tests.ui.dagster_dev import DagsterDev, assert_location_loaded, open_instance

MODEL, LAYER = "smollm2-135m@demo-res", 6
SERVER_PORTS = {"dagster dev": 3000, "sae_assets.viewer": 8050}
"""Each server's default port, as the README's URLs name it."""


def readme_env() -> dict[str, str]:
    """The environment a newcomer's shell has: none of the platform's variables, no DAGSTER_HOME. Automation starts
    stopped so the clone's instance runs only what the commands (and the UI test) launch; the explained-variance
    floor is off for the UI test's tiny training run."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and not k.startswith("SAE_ASSETS_")}
    return {**env, "SAE_ASSETS_AUTOMATION": "stopped", "SAE_ASSETS_MIN_EXPLAINED_VARIANCE": "0"}


def write_small_lake(root: Path) -> None:
    """The viewer tests' lake (every table a feature page reads), re-keyed to the demo's model and layer 6, and a
    ``sae_evals`` row."""
    from sae_assets.core.sae.eval_table import eval_row
    from tests.builders import sample_evals
    from tests.viewer.test_feature_data import write_lake

    staging = root.parent / "staging-lake"
    write_lake(str(staging))
    lake = LakeResource(root=str(root))
    for table in sorted(p.name for p in staging.iterdir() if (p / "_delta_log").is_dir()):
        lake.write_partition(table, pl.read_delta(str(staging / table)).drop("model", "layer"), MODEL, LAYER)
    shutil.rmtree(staging)
    evals = eval_row(sample_evals(), f"blocks.{LAYER}.hook_resid_post", 4, 128, 64, "offline:wiki-summaries", 9900,
                     30.0)
    lake.write_partition("sae_evals", evals, MODEL, LAYER)  # as the demo's sae_evals writes it


@pytest.fixture(scope="session")
def readme_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the repo root after the demo: the venv and package linked, the top-level files copied."""
    root = tmp_path_factory.mktemp("clone")
    for name in (".venv", "sae_assets"):
        (root / name).symlink_to(REPO_ROOT / name)
    for name in ("workspace.yaml", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, root / name)
    (root / "dagster_home").mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    write_small_lake(root / "dagster_home" / "lake")
    register_models(open_instance(root / "dagster_home"), [MODEL])
    return root


@pytest.fixture(scope="session")
def readme_ports(readme_clone: Path) -> Iterator[dict[int, int]]:
    """Every server block of the README started as written, on a free port: README port -> the port used."""
    with ExitStack() as stack:
        used: dict[int, int] = {}
        for block in (b for b in readme_blocks(REPO_ROOT / "README.md") if b.is_server):
            (command,) = block.commands()
            server, default = next((s, p) for s, p in SERVER_PORTS.items() if s in command)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            ready = f"{url}/server_info" if server == "dagster dev" else f"{url}/"
            log_name = f"readme-{server.replace(' ', '-')}.log"
            stack.enter_context(serving_command(["bash", "-c", f"{command} --port {port}"], ready, readme_clone,
                                                readme_env(), timeout_s=240, log_name=log_name))
            if server == "dagster dev":
                assert_location_loaded(url)
            used[default] = port
        yield used


@pytest.fixture(scope="session")
def readme_dagster_dev(readme_clone: Path, readme_ports: dict[int, int]) -> DagsterDev:
    """The README's `dagster dev`, for tests that drive the UI."""
    home = readme_clone / "dagster_home"
    return DagsterDev(url=f"http://127.0.0.1:{readme_ports[SERVER_PORTS['dagster dev']]}", home=home,
                      lake=home / "lake")
