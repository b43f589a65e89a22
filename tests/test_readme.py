"""The README's commands, run as written from a folder laid out like a clean clone after the demo.

Every ``bash`` block of README.md is run, except the one `.ci/run` runs itself (setup + demo, the tests: checked to
be in `.ci/run` word for word). Server
commands (`dagster dev`, the viewer) are started in the background on a free port, and the other blocks' URLs are
pointed at it. Every other block runs in bash with ``set -eu``, and its output is checked for what the command
should give; ``python`` blocks run in the clone's Python (the YAML catalog example is checked by
tests/catalog/test_catalog.py). The clone's lake holds every table a feature page reads (the viewer tests' small
lake, under the demo's model key and layer 6), and its instance has the demo's model partitions. A command that
fails, or a new command that is neither run nor accounted for, fails here instead of a newcomer.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.readme_clone import MODEL, SERVER_PORTS, readme_env
from tests.readme_commands import Block, readme_blocks, with_port

BLOCKS = readme_blocks(REPO_ROOT / "README.md")
CI_RUN = ("bash scripts/setup && .venv/bin/python -m sae_assets.demo", ".venv/bin/python -m pytest")
EXPECTED = {r"/graphql": ['"assetNodes"', '"sae_decoder"', '"feature_map"'], r"dg list defs": ["trained_sae"],
            r"/api/feature\?": ['"label"'], r"asset materialize": ["RUN_SUCCESS"]}
"""What a block's output must contain, by a pattern of its commands: the command did its job, not only exit 0."""


def _is_ci(block: Block) -> bool:
    return block.lang == "bash" and all(c in CI_RUN for c in block.commands())


RUNNABLE = [b for b in BLOCKS if b.lang in ("bash", "python") and not _is_ci(b) and not b.is_server]


def test_every_command_is_run_here_or_by_ci() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert {c for b in BLOCKS if _is_ci(b) for c in b.commands()} == set(CI_RUN)
    assert all(command in ci for command in CI_RUN)
    assert "then ruff and mypy" in (REPO_ROOT / "README.md").read_text()
    assert ".venv/bin/ruff check sae_assets tests benchmarks" in ci and ".venv/bin/mypy" in ci
    servers = [b for b in BLOCKS if b.is_server]
    assert sorted(s for b in servers for s in SERVER_PORTS if s in b.commands()[0]) == sorted(SERVER_PORTS)
    assert all(len(b.commands()) == 1 for b in servers), "a server block holds its one command"


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_readme_block_runs_as_written(block: Block, readme_clone: Path, readme_ports: dict[int, int]) -> None:
    if block.lang == "python":
        argv = [str(readme_clone / ".venv" / "bin" / "python"), "-c", block.body]
    else:
        script = "\n".join(block.commands())
        for default, port in readme_ports.items():
            script = with_port(script, default, port)
        argv = ["bash", "-eu", "-c", script]  # no pipefail: `curl | head` as a shell runs it
    done = subprocess.run(argv, cwd=readme_clone, env=readme_env(), capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"README line {block.line} failed ({done.returncode}):\n{output[-4000:]}"
    for pattern, wanted in EXPECTED.items():
        if re.search(pattern, block.body):
            assert all(w in output for w in wanted), f"README line {block.line}: {wanted} not in\n{output[-4000:]}"



def test_readme_figures_are_the_codes() -> None:
    """Each default the README names is the code's: the demo's layers and SAE width, the `cpu` budget profile, the
    full scan's tokens, the sensor's interval and the `gpu` pool's slot."""
    from sae_assets.catalog import load_catalog
    from sae_assets.defs.assets.activation_scan import ActivationScanConfig
    from sae_assets.defs.budgets import PROFILES
    from sae_assets.defs.sensors import new_sae_sensor

    readme = (REPO_ROOT / "README.md").read_text()
    catalog = load_catalog(REPO_ROOT / "sae_assets" / "catalog" / "catalog.yaml")
    demo, gemma = catalog.entry(MODEL), catalog.entry("gemma-3-270m@demo-res")
    scope = catalog.entry("gemma-3-270m@gemmascope-2-res-16k")
    cpu = PROFILES["cpu"]
    stated = {
        "layers 2, 4 and 6": list(demo.layers) == [2, 4, 6],
        "a 2,048-latent SAE per layer": demo.sae.train is not None and demo.sae.train.d_sae == 2048,
        "65k tokens scanned": cpu["activation_scan"]["max_tokens"] == 65_536,
        "32 LLM labels": cpu["feature_labels"]["llm_max_features"] == 32,
        "4 prompt targets": cpu["optimized_prompts"]["max_features"] == 4,
        "262k tokens scanned": ActivationScanConfig.model_fields["max_tokens"].default == 262_144,
        "every feature labelled": "llm_max_features" not in PROFILES["gpu"].get("feature_labels", {}),
        "within 30 s": new_sae_sensor.minimum_interval_seconds == 30,
        "layers 6 and 12": list(gemma.layers) == [6, 12],
        "layers 5, 9, 12, 15": list(scope.layers) == [5, 9, 12, 15],
        '"layer_12_width_16k_l0_medium"': scope.sae_id(12) == "layer_12_width_16k_l0_medium",
    }
    assert all(phrase in readme for phrase in stated), [p for p in stated if p not in readme]
    assert all(stated.values()), [p for p, ok in stated.items() if not ok]
    instance_config = (REPO_ROOT / "dagster_home" / "dagster.yaml").read_text()
    assert "one slot" in readme and re.search(r"^\s+default_limit: 1$", instance_config, re.M)
