"""Each asset run config agrees with the core config dataclasses it builds: shared fields have equal types and
defaults, and every other field is a declared, explained difference (``ConfigPair``)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from types import ModuleType

import dagster as dg
import pytest

import sae_assets.defs.assets as assets_package
from sae_assets.core.clusters.clustering import ClusterConfig
from sae_assets.core.feature_map.layout import FeatureMapConfig
from sae_assets.core.prompts.config import PromptOptConfig
from sae_assets.core.sae.training import SaeTrainingConfig
from sae_assets.core.scan.activation_examples import ExampleConfig
from sae_assets.core.scan.activation_scan import ScanConfig
from sae_assets.defs.assets.activation_scan import ActivationScanConfig
from sae_assets.defs.assets.feature_clusters import FeatureClustersConfig
from sae_assets.defs.assets.feature_map import FeatureMapRunConfig
from sae_assets.defs.assets.optimized_prompts import OptimizedPromptsConfig
from sae_assets.defs.assets.trained_sae import TrainedSaeConfig
from sae_assets.defs.run_config import ConfigPair, core_config

MODULES: list[ModuleType] = [importlib.import_module(f"{assets_package.__name__}.{m.name}")
                             for m in pkgutil.iter_modules(assets_package.__path__)]
# Each declared pair once, even where a module imports another's.
PAIRS: list[ConfigPair] = list({id(v): v for m in MODULES for v in vars(m).values()
                                if isinstance(v, ConfigPair)}.values())
# Asset run configs with no core config dataclass behind them, and why.
NO_CORE_CONFIG = {
    "AlignmentConfig": "one argument of sfal_ndcg; its default is the core's DEFAULT_TOP_N",
    "ExplanationsConfig": "where the asset reads explanations from (I/O)",
    "NeuronpediaExplanationsConfig": "which features the asset fetches (I/O)",
    "ExplanationEmbeddingsConfig": "which embedding models the asset loads (a resource's input)",
    "SaeEvalsConfig": "which held-out tokens and how many per forward: arguments of evaluate_spliced, no config",
}


def _pair_id(pair: ConfigPair) -> str:
    return f"{pair.asset.__name__}-{pair.core.__name__}"


def _core_default(f: dataclasses.Field) -> object:
    """The field's default; ``dataclasses.MISSING`` for a required field."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def test_every_asset_config_built_from_a_core_config_is_paired() -> None:
    paired_cores = {p.core for p in PAIRS}
    paired_assets = {p.asset for p in PAIRS}
    for module in MODULES:
        for value in vars(module).values():
            if not isinstance(value, type):
                continue
            core_config_class = (dataclasses.is_dataclass(value) and value.__module__.startswith("sae_assets.core.")
                                 and value.__name__.endswith(("Config", "Settings")))
            if core_config_class:
                assert value in paired_cores, f"{module.__name__} imports {value.__name__}: declare its ConfigPair"
            if issubclass(value, dg.Config) and value.__module__ == module.__name__:
                assert value in paired_assets or value.__name__ in NO_CORE_CONFIG, (
                    f"{module.__name__}.{value.__name__}: declare a ConfigPair or add it to NO_CORE_CONFIG")
    assert len(PAIRS) == len({(p.asset, p.core) for p in PAIRS}) >= 7, "one declaration per pair"


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_shared_fields_agree(pair: ConfigPair) -> None:
    asset_fields = pair.asset.model_fields
    core_fields = {f.name: f for f in dataclasses.fields(pair.core)}
    core_types = typing.get_type_hints(pair.core)
    assert pair.shared(), "a pair shares at least one field"
    for name in pair.shared():
        assert asset_fields[name].annotation == core_types[name], f"{name}: the types differ"
        asset_default = asset_fields[name].get_default(call_default_factory=True)
        core_default = _core_default(core_fields[name])
        if name in pair.defaults:
            assert asset_default != core_default, f"{name}: declared as a default difference but they agree"
        else:
            assert asset_default == core_default, f"{name}: asset default {asset_default!r} != {core_default!r}"
    assert set(pair.defaults) <= set(pair.shared())


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_every_other_field_is_a_declared_difference(pair: ConfigPair) -> None:
    core_names = {f.name for f in dataclasses.fields(pair.core)}
    assert set(pair.core_only) == core_names - set(pair.asset.model_fields), "core fields the asset lacks"
    assert all(reason.strip() for reason in [*pair.asset_only.values(), *pair.core_only.values(),
                                             *pair.defaults.values()]), "every difference says why"
    # An asset field none of its core configs has must be declared by one of its pairs (and only such fields).
    siblings = [p for p in PAIRS if p.asset is pair.asset]
    shared_with_any = {name for p in siblings for name in p.shared()}
    declared = {name for p in siblings for name in p.asset_only}
    assert declared == set(pair.asset.model_fields) - shared_with_any, "asset fields no core config has"


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
def test_a_default_run_builds_the_core_defaults_but_the_declared_differences(pair: ConfigPair) -> None:
    """The core-only fields are passed as overrides, the same on both sides (their default, else a stand-in)."""
    overrides = {f.name: object() if _core_default(f) is dataclasses.MISSING else _core_default(f)
                 for f in dataclasses.fields(pair.core) if f.name in pair.core_only}
    expected = {**overrides, **{name: pair.asset.model_fields[name].get_default() for name in pair.defaults}}
    assert core_config(pair.asset(), pair.core, **overrides) == pair.core(**expected)


def test_the_assets_build_their_core_configs_from_the_shared_fields() -> None:
    assert ActivationScanConfig().scan_config() == ScanConfig()
    assert ActivationScanConfig(seed=3, top_k=5).scan_config() == ScanConfig(seed=3,
                                                                             examples=ExampleConfig(seed=3, top_k=5))
    assert FeatureClustersConfig(representation="decoder", eps=0.3).cluster_config() == ClusterConfig(eps=0.3)
    assert FeatureMapRunConfig(init="spectral").feature_map_config() == FeatureMapConfig(init="spectral")
    assert OptimizedPromptsConfig().prompt_config() == PromptOptConfig()
    assert OptimizedPromptsConfig(projection="l2").prompt_config().projection == "l2"


def test_overrides_set_the_core_only_fields() -> None:
    cfg = core_config(TrainedSaeConfig(lr=2e-3, seed=3), SaeTrainingConfig, architecture="topk", d_sae=64, k=4,
                      training_samples=1000)
    assert (cfg.lr, cfg.seed, cfg.batch_size, cfg.d_sae, cfg.training_samples) == (2e-3, 3, 1024, 64, 1000)
