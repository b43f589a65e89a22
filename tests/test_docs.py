"""docs/ stays in step with the code: the configuration reference is the rendered output of
``sae_assets.defs.config_reference``, each default the docs' prose names is read from the code, every relative link
of README.md and docs/ reaches a file (and heading), and every source path the docs name exists."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import yaml

from sae_assets.defs import config_reference
from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
PAGES = ["operations", "configuration", "assets", "benchmarks", "at-scale", "layout"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SOURCE_PATH = re.compile(r"(?<![\w/.<-])((?:sae_assets|benchmarks|tests)/[\w/.-]*\.py)\b")


def _section(path: Path, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    return path.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (duplicates numbered -1, -2...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _constant(name: str, *modules: str) -> int:
    """``name`` from the first of ``modules`` that exists and defines it."""
    for module in modules:
        try:
            value = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(value, int):
            return value
    raise AssertionError(f"{name} not found in {modules}")


def _markdown_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted((REPO_ROOT / "benchmarks" / "results")
                                                                          .glob("*.md"))]


def test_the_docs_pages_exist() -> None:
    assert sorted(p.stem for p in DOCS.glob("*.md")) == sorted(PAGES)


def test_configuration_reference_is_the_rendered_config() -> None:
    rendered = config_reference.render()
    section = _section(DOCS / "assets.md", "Configuration reference")
    intro, _, table = section.partition("\n### ")
    assert "### " + table == rendered, "regenerate: .venv/bin/python -m sae_assets.defs.config_reference"
    assert "python -m sae_assets.defs.config_reference" in intro  # the command that regenerates it
    cli = subprocess.run([sys.executable, "-m", "sae_assets.defs.config_reference"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120, check=True)
    assert cli.stdout == rendered


def test_the_reference_covers_every_config_and_profile() -> None:
    from sae_assets.defs.budgets import PROFILES

    rendered = config_reference.render()
    names = {cls.__name__ for _, cls in config_reference.config_classes()}
    assert {"ActivationScanConfig", "FeatureLabelsConfig", "TrainedSaeConfig", "LakeMaintenanceConfig"} <= names
    assert "### `maintain_lake`" in rendered and "### `activation_scan`" in rendered
    for profile, assets in PROFILES.items():
        for asset, values in assets.items():
            for field in values:
                assert f"| `{profile}` | `{asset}` | `{field}` |" in rendered


def test_defaults_named_in_the_prose_are_the_codes() -> None:
    from sae_assets.core.common.progress import Progress
    from sae_assets.core.feature_map.knn import DEFAULT_BLOCK
    from sae_assets.core.sae import logit_effects
    from sae_assets.core.scan import cooccurrence
    from sae_assets.defs.assets.activation_scan import ActivationScanConfig
    from sae_assets.defs.automation import automation_sensor
    from sae_assets.defs.budgets import PROFILES
    from sae_assets.defs.sensors import new_sae_sensor

    compiled_min_columns = _constant("COMPILED_MIN_COLUMNS", "sae_assets.core.common.ranking_torch",
                                     "sae_assets.core.common.ranking")
    window = ActivationScanConfig.model_fields["window"].default
    every_s = inspect.signature(Progress.__init__).parameters["every_s"].default
    stated = {
        "assets": [f"`window` tokens ({window} by default, as in SFAL; "
                   f"{PROFILES['cpu']['activation_scan']['window']} in the `cpu` profile",
                   f"written in blocks of {cooccurrence.BATCH_ROWS:,} rows, committed as one Delta transaction",
                   f"written in blocks of {logit_effects.BATCH_ROWS:,} rows",
                   f"is logged every {every_s:g} s"],
        "operations": [f"| `new_sae_sensor` | every {new_sae_sensor.minimum_interval_seconds} s |",
                       f"| `default_automation_condition_sensor` | every "
                       f"{automation_sensor.minimum_interval_seconds} s |"],
        "benchmarks": [f"rows of {compiled_min_columns:,}+ features ranked by a compiled per-row selection",
                       f"the exact k-NN in {DEFAULT_BLOCK:,}-row blocks"],
        "at-scale": [f"(1 GiB at {2 ** 30 // 4 // 16384:,} latents, 4 GiB at {2 ** 32 // 4 // 32768:,})"],
    }
    for page, phrases in stated.items():
        text = " ".join((DOCS / f"{page}.md").read_text().split())
        missing = [p for p in phrases if p not in text]
        assert not missing, f"docs/{page}.md no longer says what the code does: {missing}"
    assert window == 256  # SFAL's window: the docs call it that
    instance = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    assert "gives every\npool one slot" in (DOCS / "operations.md").read_text()


def test_the_jobs_table_lists_every_job() -> None:
    from sae_assets.definitions import defs

    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    table = re.findall(r"^\| `(\w+)` \|", _section(DOCS / "assets.md", "Jobs"), re.M)
    assert sorted(table) == sorted(jobs)


def test_relative_links_reach_a_file_and_heading() -> None:
    broken = []
    for page in _markdown_files():
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_source_paths_named_in_the_docs_exist() -> None:
    missing = []
    for page in _markdown_files():
        for path in SOURCE_PATH.findall(page.read_text()):
            if not (REPO_ROOT / path).exists():
                missing.append(f"{page.relative_to(REPO_ROOT)}: {path}")
    assert not missing, missing


def test_no_dated_host_history_in_the_docs() -> None:
    """Dated measurements live in benchmarks/results/; docs/ names them only through links."""
    for page in DOCS.glob("*.md"):
        text = LINK.sub("", page.read_text())
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), page.name
