"""The package's shape: core/ is plain Python grouped by stage, no module reaches into another stage for a
helper, nothing imports in a circle, and the UI's asset groups are the stages."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from sae_assets.definitions import defs
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "sae_assets"
CORE = PACKAGE / "core"
STAGES = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").exists())


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports (at any depth: function-level imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return found


MODULES = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_core_is_grouped_by_stage_and_imports_no_dagster() -> None:
    assert STAGES == ["alignment", "clusters", "common", "feature_map", "labels", "prompts", "sae", "scan"]
    assert not [p.name for p in CORE.glob("*.py") if p.name != "__init__.py"], "core/ modules live in a stage"
    for name, imports in MODULES.items():
        if name.startswith("sae_assets.core"):
            assert not {i for i in imports if i.split(".")[0] == "dagster"}, name


def test_no_core_module_reaches_into_another_stage() -> None:
    for name, imports in MODULES.items():
        parts = name.split(".")
        if parts[:2] != ["sae_assets", "core"] or len(parts) < 4:
            continue
        stages = {i.split(".")[2] for i in imports if i.startswith("sae_assets.core.") and i.count(".") >= 2}
        assert stages <= {parts[2], "common"}, f"{name} imports from stages {sorted(stages)}"
        if parts[2] == "common":
            assert stages <= {"common"}, name


def test_no_lower_layer_imports_the_dagster_wiring() -> None:
    # defs/ wires the layers below it into Dagster; nothing below reaches back up, not even inside a function.
    lower = ("sae_assets.resources", "sae_assets.core", "sae_assets.storage", "sae_assets.catalog")
    checked = [name for name in MODULES if name in lower or name.startswith(tuple(f"{p}." for p in lower))]
    assert "sae_assets.resources.device" in checked and "sae_assets.catalog" in checked
    for name in checked:
        up = sorted(i for i in MODULES[name] if i == "sae_assets.defs" or i.startswith("sae_assets.defs."))
        assert not up, f"{name} imports {up}"


def test_no_import_cycles() -> None:
    graph = {name: {i for i in imports if i in MODULES and i != name} for name, imports in MODULES.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_asset_groups_are_the_stages() -> None:
    groups = {spec.group_name for spec in defs.resolve_all_asset_specs()}
    assert groups == set(STAGES) - {"common"}


def test_docs_asset_table_names_code_that_exists() -> None:
    section = (REPO_ROOT / "docs" / "assets.md").read_text().split("\n## Assets\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if re.match(r"\| `\w+`( → `\w+`)? \| ", line)]
    named: set[str] = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        named.add(re.findall(r"`(\w+)`", cells[0])[-1])
        refs = re.findall(r"`([\w.]+):([\w.]+)`", cells[2])
        assert refs, row
        for module, attr in refs:
            target = importlib.import_module(f"sae_assets.{module}")
            for part in attr.split("."):
                target = getattr(target, part)
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} <= named
