"""sae_assets.settings: the table in docs/configuration.md is its output, every environment variable the package
reads is in it (a scan of the source), and the accessors read the environment when called: defaults when unset,
parsed when set."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from sae_assets import settings
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "sae_assets"
NAMES = {s.name for s in settings.SETTINGS}
ENV_CALLS = {"getenv", "putenv", "unsetenv", "EnvVar"}  # os.getenv(name), dg.EnvVar(name)
SETTINGS_READERS = {"get", "nonempty", "is_set"}  # settings.get(name)


def _resolve(node: ast.expr, constants: dict[str, str], imported: dict[str, tuple[str, str]]) -> str | None:
    """The variable name an expression denotes: a literal, a module constant, an imported name, ``settings.X``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in constants:
            return constants[node.id]
        if node.id in imported:
            value = getattr(importlib.import_module(imported[node.id][0]), imported[node.id][1], None)
            return value if isinstance(value, str) else None
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
        value = getattr(settings, node.attr, None)
        return value if isinstance(value, str) else None
    return None


def env_reads(source: str, in_settings: bool = False) -> list[tuple[int, str | None, str]]:
    """(line, variable name or None when the name is computed, how) for each environment access in ``source``:
    ``os.environ`` (get, [], in, setdefault, pop...), ``os.getenv``, ``dg.EnvVar`` and ``settings.get``-style reads
    (plain ``get(...)`` when ``source`` is settings.py itself)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    constants, imported = {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if (value := _resolve(node.value, {}, {})) is not None:
                constants[node.targets[0].id] = value
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported |= {a.asname or a.name: (node.module, a.name) for a in node.names}
    found = []

    def add(node: ast.AST, key: ast.expr | None, how: str) -> None:
        name = _resolve(key, constants, imported) if key is not None else None
        found.append((node.lineno, name, how))

    for node in ast.walk(tree):
        is_environ = ((isinstance(node, ast.Attribute) and node.attr == "environ")
                      or (isinstance(node, ast.Name) and node.id == "environ"))
        if is_environ:
            parent = parents.get(node)
            if isinstance(parent, ast.Subscript) and parent.value is node:
                add(node, parent.slice, "environ[]" if isinstance(parent.ctx, ast.Load) else "environ[]=")
            elif isinstance(parent, ast.Compare) and node in parent.comparators:
                add(node, parent.left, "in environ")
            elif isinstance(parent, ast.Attribute) and isinstance(call := parents.get(parent), ast.Call):
                add(node, call.args[0] if call.args else None, f"environ.{parent.attr}")
            else:
                add(node, None, "environ")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            on_settings = isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "settings"
            via_settings = name in SETTINGS_READERS and (on_settings or (isinstance(func, ast.Name) and in_settings))
            if name in ENV_CALLS or via_settings:
                add(node, node.args[0] if node.args else None, name)
    return sorted(found, key=lambda read: read[0])


def package_env_reads() -> dict[str, list[tuple[int, str | None, str]]]:
    reads = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        reads[str(path.relative_to(REPO_ROOT))] = env_reads(path.read_text(), in_settings=path.name == "settings.py")
    return reads


def test_docs_table_is_the_rendered_settings() -> None:
    docs = (REPO_ROOT / "docs" / "configuration.md").read_text()
    section = docs.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == settings.markdown_table()
    assert "python -m sae_assets.settings" in section.split("\n|", 1)[0]  # the command that regenerates it
    cli = subprocess.run([sys.executable, "-m", "sae_assets.settings"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60, check=True)
    assert cli.stdout == settings.markdown_table()


def test_settings_are_unique_one_line_and_fit_a_table() -> None:
    assert len(NAMES) == len(settings.SETTINGS)
    for s in settings.SETTINGS:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", s.name), s.name
        for text in (s.default, s.help):
            assert text and "|" not in text and "\n" not in text, s


def test_every_environment_variable_the_package_reads_is_a_setting() -> None:
    reads = package_env_reads()
    assert sum(len(r) for r in reads.values()) > 20  # the scan sees the reads
    unregistered = [(f, line, name, how) for f, rs in reads.items() for line, name, how in rs
                    if name is not None and name not in NAMES]
    assert not unregistered, f"register these in sae_assets/settings.py (SETTINGS): {unregistered}"
    # A computed name is only allowed in settings.py, whose get() refuses names not in SETTINGS.
    computed = [(f, line, how) for f, rs in reads.items() for line, name, how in rs
                if name is None and f != "sae_assets/settings.py"]
    assert not computed, f"read these through sae_assets.settings with a registered name: {computed}"
    with pytest.raises(KeyError, match="not in sae_assets.settings.SETTINGS"):
        settings.get("SAE_ASSETS_NOT_A_SETTING")
    # Every SAE_ASSETS_* name the package's sources mention (messages, docstrings) is a setting too.
    mentioned = {m for p in PACKAGE.rglob("*.py") for m in re.findall(r"\bSAE_ASSETS_[A-Z0-9_]*[A-Z0-9]\b",
                                                                        p.read_text())}
    assert mentioned and mentioned <= NAMES, mentioned - NAMES


def test_outside_settings_the_package_reads_the_environment_only_through_it() -> None:
    # dg.EnvVar (secrets handed to resources) and writes (the demo sets DAGSTER_HOME for Dagster) are allowed.
    direct = [(f, line, name, how) for f, rs in package_env_reads().items() for line, name, how in rs
              if f != "sae_assets/settings.py" and how not in (*SETTINGS_READERS, "EnvVar", "environ[]=")]
    assert not direct, f"read these through sae_assets.settings: {direct}"


def test_the_scan_catches_a_new_variable() -> None:
    source = '''
import os
from os import environ
import dagster as dg
from sae_assets import settings
NAME = "SAE_ASSETS_NEW_ONE"
a = os.environ.get(NAME, "x")
b = os.environ["SAE_ASSETS_OTHER"]
c = os.getenv("SAE_ASSETS_THIRD")
d = dg.EnvVar("SECRET_KEY")
e = "SAE_ASSETS_FOURTH" in environ
f = settings.get(settings.LAKE)
g = {**os.environ}
h = os.environ.get(f"SAE_ASSETS_{a}")
'''
    names = [(name, how) for _, name, how in env_reads(source)]
    assert names == [("SAE_ASSETS_NEW_ONE", "environ.get"), ("SAE_ASSETS_OTHER", "environ[]"),
                     ("SAE_ASSETS_THIRD", "getenv"), ("SECRET_KEY", "EnvVar"), ("SAE_ASSETS_FOURTH", "in environ"),
                     ("SAE_ASSETS_LAKE", "get"), (None, "environ"), (None, "environ.get")]


def test_accessors_return_the_defaults_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    assert all(settings.get(name) is None and not settings.is_set(name) for name in NAMES)
    assert settings.get(settings.DEVICE, settings.DEFAULT_DEVICE) == "auto"
    assert settings.automation_running() is True
    assert settings.explanations_cron() == "0 3 * * 1"
    assert settings.min_explained_variance() == 0.5
    assert settings.executor_kind() == "in_process"
    assert (settings.max_concurrent("multiprocess"), settings.max_concurrent("k8s")) == (2, 8)
    assert settings.aws_environment() == {}

    from sae_assets.catalog import DEFAULT_CATALOG_PATH, catalog_path
    from sae_assets.catalog.drop_folder import default_drop_folder
    from sae_assets.defs.executors import executor_from_env
    from sae_assets.defs.resources import default_resources

    assert settings.lake_root() == settings.DEFAULT_LAKE_ROOT and settings.files_root() is None
    assert catalog_path() == DEFAULT_CATALOG_PATH
    assert default_drop_folder() == REPO_ROOT / "dagster_home" / "sae_drop"
    assert executor_from_env().name == dg.in_process_executor.name  # wrapped to reap dead runs first
    resources = default_resources()
    assert (resources["device"].device, resources["device"].dtype) == ("auto", "auto")
    assert (resources["lake"].root, resources["lake"].files_root) == (settings.DEFAULT_LAKE_ROOT, None)
    assert resources["labeller"].backend != "openai" and resources["neuronpedia"].api_key is None


def test_accessors_parse_what_is_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(settings.AUTOMATION, " Stopped ")
    monkeypatch.setenv(settings.EXPLANATIONS_CRON, "*/5 * * * *")
    monkeypatch.setenv(settings.MIN_EXPLAINED_VARIANCE, "0.8")
    monkeypatch.setenv(settings.EXECUTOR, " Multiprocess ")
    monkeypatch.setenv(settings.MAX_CONCURRENT, "5")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv(settings.DAGSTER_HOME, str(tmp_path / "home"))
    monkeypatch.delenv(settings.LAKE, raising=False)
    monkeypatch.delenv(settings.SAE_DROP, raising=False)
    monkeypatch.setenv(settings.LABELLER_URL, "http://127.0.0.1:8000/v1")
    monkeypatch.setenv(settings.OPENAI_API_KEY, "sk-test")
    monkeypatch.setenv(settings.NEURONPEDIA_API_KEY, "np-test")
    monkeypatch.setenv(settings.DEVICE, "cpu")
    assert settings.automation_running() is False
    assert settings.explanations_cron() == "*/5 * * * *"
    assert settings.min_explained_variance() == 0.8
    assert settings.executor_kind() == "multiprocess" and settings.max_concurrent("k8s") == 5
    assert settings.aws_environment() == {"AWS_REGION": "eu-west-1"}

    from sae_assets.catalog.drop_folder import default_drop_folder
    from sae_assets.defs.resources import default_resources

    assert settings.lake_root() == str(tmp_path / "home" / "lake")
    assert default_drop_folder() == tmp_path / "home" / "sae_drop"
    resources = default_resources()
    assert resources["device"].device == "cpu"
    assert resources["lake"].root == str(tmp_path / "home" / "lake")
    labeller, neuronpedia = resources["labeller"], resources["neuronpedia"]
    assert (labeller.backend, labeller.base_url, labeller.model) == ("openai", "http://127.0.0.1:8000/v1",
                                                                     "gpt-4o-mini")
    # Secrets stay EnvVars: Dagster reads them at setup and does not show them.
    assert isinstance(labeller.api_key, dg.EnvVar) and labeller.api_key.env_var_name == settings.OPENAI_API_KEY
    assert isinstance(neuronpedia.api_key, dg.EnvVar)

    monkeypatch.setenv(settings.AUTOMATION, "maybe")
    with pytest.raises(ValueError, match="SAE_ASSETS_AUTOMATION must be 'running' or 'stopped', not 'maybe'"):
        settings.automation_running()
    monkeypatch.setenv(settings.EXECUTOR, "slurm")
    with pytest.raises(ValueError,
                       match="SAE_ASSETS_EXECUTOR must be in_process, multiprocess, celery or k8s, not 'slurm'"):
        settings.executor_kind()


def test_table_defaults_are_the_code_defaults() -> None:
    from sae_assets.catalog import DEFAULT_CATALOG_PATH
    from sae_assets.resources.corpus import OFFLINE_WIKI
    from sae_assets.resources.neuronpedia import DEFAULT_API_URL, DEFAULT_S3_URL

    default = {s.name: s.default for s in settings.SETTINGS}
    assert default[settings.NEURONPEDIA_S3_URL] == f"`{DEFAULT_S3_URL}`"
    assert default[settings.NEURONPEDIA_API_URL] == f"`{DEFAULT_API_URL}`"
    assert default[settings.CORPUS] == f"`{OFFLINE_WIKI}`"
    assert default[settings.CATALOG] == f"`{DEFAULT_CATALOG_PATH.relative_to(REPO_ROOT)}`"
    assert f"`{settings.DEFAULT_LAKE_ROOT}`" in default[settings.LAKE]
