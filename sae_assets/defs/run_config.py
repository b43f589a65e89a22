"""Asset run configs built from the core's config dataclasses: one source of names, types and defaults.

An asset's ``dg.Config`` (the fields and descriptions Dagster's UI shows) mirrors the frozen dataclass its core
computation takes. :func:`core_config` builds the dataclass from the fields the two share by name, and a
:class:`ConfigPair` next to each asset config declares every intended difference with its reason;
``tests/defs/test_run_config.py`` checks that the shared fields agree and that nothing else differs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Core = TypeVar("Core", bound="DataclassInstance")


def core_config(asset_config: dg.Config, core_cls: type[Core], **overrides: Any) -> Core:
    """``core_cls`` built from the fields of ``asset_config`` it has by name; ``overrides`` set the others
    (values the asset computes or reads elsewhere, e.g. from the catalog or a resource)."""
    asset_fields = type(asset_config).model_fields
    shared = {f.name: getattr(asset_config, f.name) for f in dataclasses.fields(core_cls) if f.name in asset_fields}
    return core_cls(**{**shared, **overrides})


@dataclasses.dataclass(frozen=True)
class ConfigPair:
    """An asset's run config and a core config dataclass it builds, with their intended differences."""

    asset: type[dg.Config]
    core: type
    asset_only: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Asset fields that no core config of this asset has (e.g. its I/O or target selection) -> why."""
    core_only: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Core fields the asset does not expose (the core default applies) or sets itself (an override) -> why."""
    defaults: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Shared fields whose defaults differ on purpose -> why (the asset's default is what a run uses)."""

    def shared(self) -> list[str]:
        """The field names the two have in common, in the core's order."""
        return [f.name for f in dataclasses.fields(self.core) if f.name in self.asset.model_fields]
