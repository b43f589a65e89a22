"""The run-config reference of ``docs/assets.md``, generated from the code: every ``dg.Config`` under ``defs/``
(field, default, description, as Dagster's launchpad shows them) and the budget profiles of
:mod:`sae_assets.defs.budgets`.

    python -m sae_assets.defs.config_reference      # the Markdown that docs/assets.md holds under its heading

``tests/test_docs.py`` checks that the docs hold exactly this output.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg

import sae_assets
import sae_assets.defs

PACKAGE_ROOT = Path(sae_assets.__file__).resolve().parent.parent


def config_classes() -> list[tuple[ModuleType, type[dg.Config]]]:
    """(module, class) for every ``dg.Config`` subclass defined in a module under ``sae_assets.defs``, by module
    name, then in source order."""
    found = []
    for info in sorted(pkgutil.walk_packages(sae_assets.defs.__path__, "sae_assets.defs."), key=lambda m: m.name):
        if info.name == __name__ or info.name.endswith(".config_reference"):
            continue
        module = importlib.import_module(info.name)
        classes = [obj for obj in vars(module).values()
                   if inspect.isclass(obj) and issubclass(obj, dg.Config) and obj.__module__ == module.__name__]
        found += [(module, cls) for cls in sorted(classes, key=lambda c: inspect.getsourcelines(c)[1])]
    return found


def op_name(module: ModuleType, cls: type[dg.Config]) -> str:
    """The op (an asset's op is named as the asset) whose ``config`` parameter is ``cls``: the key under ``ops:``
    in run config. Falls back to the module's name."""
    for obj in vars(module).values():
        op = obj.op if isinstance(obj, dg.AssetsDefinition) else obj if isinstance(obj, dg.OpDefinition) else None
        if op is None:
            continue
        fn = getattr(op.compute_fn, "decorated_fn", None)
        if fn is not None and cls in typing.get_type_hints(fn).values():
            return op.name
    return module.__name__.rsplit(".", 1)[-1]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _value(value: Any) -> str:
    """A default as it is written in YAML run config (JSON is valid YAML)."""
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):  # an Enum
        value = value.value
    return f"`{json.dumps(value, default=str)}`"


def config_table(cls: type[dg.Config]) -> str:
    """One row per field: name, default, description."""
    rows = ["| field | default | description |", "|---|---|---|"]
    for name, field in cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `{name}` | {_value(default)} | {_cell(field.description or '')} |")
    return "\n".join(rows) + "\n"


def profiles_table() -> str:
    """One row per value a budget profile sets; a profile that sets nothing says so."""
    from sae_assets.defs.budgets import PROFILES

    rows = ["| profile | asset | field | value |", "|---|---|---|---|"]
    for profile, assets in PROFILES.items():
        if not any(assets.values()):
            rows.append(f"| `{profile}` | every asset | | the defaults above |")
        for asset, values in assets.items():
            rows += [f"| `{profile}` | `{asset}` | `{field}` | {_value(value)} |" for field, value in values.items()]
    return "\n".join(rows) + "\n"


def render() -> str:
    """The whole reference: a section per op config, then the budget profiles."""
    parts = []
    for module, cls in config_classes():
        path = Path(inspect.getfile(module)).resolve().relative_to(PACKAGE_ROOT)
        parts.append(f"### `{op_name(module, cls)}`\n\n`{cls.__name__}` in `{path.as_posix()}`; run config "
                     f"`ops: {{{op_name(module, cls)}: {{config: {{...}}}}}}`.\n\n{config_table(cls)}")
    parts.append("### Budget profiles\n\nValues a profile gives the fields a run's config does not set "
                 "(`sae_assets/defs/budgets.py`, `PROFILES`).\n\n" + profiles_table())
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
