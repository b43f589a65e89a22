"""Budget profiles: which one a partition gets, and that run config still wins field by field."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import pytest
import torch

from sae_assets.catalog import load_catalog
from sae_assets.defs.assets.activation_scan import ActivationScanConfig
from sae_assets.defs.assets.feature_labels import FeatureLabelsConfig
from sae_assets.defs.assets.optimized_prompts import OptimizedPromptsConfig
from sae_assets.defs.assets.sae_evals import SaeEvalsConfig
from sae_assets.defs.assets.trained_sae import TrainedSaeConfig
from sae_assets.defs.budgets import PROFILES, budget_profile, with_budget

ENTRY = load_catalog().entry("smollm2-135m@demo-res")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
CONFIGS = {"activation_scan": ActivationScanConfig, "feature_labels": FeatureLabelsConfig,
           "optimized_prompts": OptimizedPromptsConfig, "trained_sae": TrainedSaeConfig, "sae_evals": SaeEvalsConfig}


def test_the_profile_follows_the_variable_then_the_catalog_then_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAE_ASSETS_BUDGET", raising=False)
    assert budget_profile(ENTRY, CPU) == "cpu" and budget_profile(ENTRY, CUDA) == "gpu"
    assert budget_profile(replace(ENTRY, budget="gpu"), CPU) == "gpu"
    assert budget_profile(replace(ENTRY, budget="cpu"), CUDA) == "cpu"
    monkeypatch.setenv("SAE_ASSETS_BUDGET", "gpu")
    assert budget_profile(replace(ENTRY, budget="cpu"), CPU) == "gpu"
    monkeypatch.setenv("SAE_ASSETS_BUDGET", "tiny")
    with pytest.raises(ValueError, match="SAE_ASSETS_BUDGET must be auto, cpu or gpu, not 'tiny'"):
        budget_profile(ENTRY, CPU)


def test_profiles_name_real_fields_and_the_gpu_profile_is_the_defaults() -> None:
    for profile in PROFILES.values():
        for asset, values in profile.items():
            assert set(values) <= set(CONFIGS[asset].model_fields), asset
    assert PROFILES["gpu"] == {}
    assert ActivationScanConfig().max_tokens == 262_144 and FeatureLabelsConfig().llm_max_features is None


def test_fields_set_in_the_run_config_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAE_ASSETS_BUDGET", raising=False)
    context = dg.build_asset_context()
    config, name = with_budget(context, ActivationScanConfig(window=128), "activation_scan", ENTRY, CPU)
    assert name == "cpu" and config.window == 128  # set by the run
    assert (config.max_tokens, config.context_size, config.batch_tokens) == (65_536, 512, 4096)  # the profile's
    assert config.top_k == ActivationScanConfig().top_k  # not in the profile: the default
    full, name = with_budget(context, ActivationScanConfig(window=128), "activation_scan", ENTRY, CUDA)
    assert name == "gpu" and full == ActivationScanConfig(window=128)
    labels, _ = with_budget(context, FeatureLabelsConfig(llm_max_features=None), "feature_labels", ENTRY, CPU)
    assert labels.llm_max_features is None  # an explicit None (label every feature) is a choice too


def test_run_config_values_equal_to_the_defaults_still_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """``precision: float32`` and ``llm_max_features: null`` are the asset's defaults; named in the run config they
    are the run's choice, and the cpu profile must not replace them (Dagster's ``model_fields_set`` omits them)."""
    monkeypatch.delenv("SAE_ASSETS_BUDGET", raising=False)
    got: list[FeatureLabelsConfig] = []

    def probe(context, config):  # type: ignore[no-untyped-def]
        got.append(with_budget(context, config, "feature_labels", ENTRY, CPU)[0])

    probe.__annotations__ = {"context": dg.AssetExecutionContext, "config": FeatureLabelsConfig, "return": None}
    probe = dg.asset(name="feature_labels")(probe)

    given = {"precision": "float32", "llm_max_features": None}
    assert dg.materialize([probe], run_config={"ops": {"feature_labels": {"config": given}}}).success
    assert dg.materialize([probe]).success
    assert (got[0].precision, got[0].llm_max_features) == ("float32", None)  # the run's
    assert (got[1].precision, got[1].llm_max_features) == ("auto", 32)  # the profile's
