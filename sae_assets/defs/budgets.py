"""Run budgets: named profiles of run-config values, chosen by where a partition runs.

The assets' config defaults are sized for a GPU. On a CPU the same defaults would take hours (SmolLM2 writes about
one label a second on 2 cores; the scan reads 262k tokens), and runs started by ``new_sae_sensor``, declarative
automation, the weekly schedule or the UI's Materialize button pass no run config. So the long assets read their
budget here: every field the run config does not set takes the profile's value, and a field it sets is kept.

The profile is ``SAE_ASSETS_BUDGET`` when set to ``cpu`` / ``gpu``; else the catalog entry's ``budget``; else
``gpu`` on a CUDA device and ``cpu`` otherwise. The demo, the sensor's runs and automation therefore get the same
budgets on the same machine, and the same catalog entry gets the full budgets on a GPU.
"""

from __future__ import annotations

from typing import Any, TypeVar

import dagster as dg
import torch

from sae_assets import settings
from sae_assets.catalog import CatalogEntry

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        # Fewer steps at a higher rate: 49k activations x 4 epochs at lr 2e-3 reach the explained variance of
        # 65k x 6 at 1e-3 in about 60% of the time. Training in bf16 autocast where the CPU has native bf16 matmuls
        # is faster again at the same explained variance. Measured: benchmarks/results/
        # 2026-11-29-issue-17-baseline-and-first-steps.md and 2026-12-01-speed-native-bf16.md.
        "trained_sae": {"training_tokens": 49_152, "epochs": 4.0, "lr": 2e-3, "precision": "auto"},
        # 65k tokens of 512-token documents; the packaged offline corpus is Wikipedia summaries (median ~100
        # tokens), so the co-occurrence window is 64 tokens instead of SFAL's 256.
        "activation_scan": {"max_tokens": 65_536, "window": 64, "context_size": 512, "batch_tokens": 4096},
        # SmolLM2 labels ~1 feature/s on 2 cores: LLM labels for the first 32 features; every feature still gets
        # its keyword label and detection score, so SFAL scores every explained feature.
        # bf16 matmuls where the CPU has them (AVX-512 BF16 / AMX): detection embeddings and LLM labels about twice
        # as fast, scores within bf16 rounding of float32's (see core/common/precision).
        "feature_labels": {"llm_max_features": 32, "precision": "auto"},
        # Prompt optimization runs the model dozens of times per step: 4 targets, briefly. (Its precision stays
        # float32: bf16 autocast made the demo's search only ~10% faster, its forwards being small.)
        # Three forwards of the whole model per context (clean, SAE spliced in, hook zeroed): 6k held-out tokens
        # take ~52 s at 16k latents on 2 cores (8k took 69 s: benchmarks/results/2026-12-04-sae-evals.md).
        "sae_evals": {"eval_tokens": 6_144},
        "optimized_prompts": {"max_features": 4, "max_steps": 30, "batch_size": 32, "top_k": 32,
                              "continuous_steps": 50},
    },
    "gpu": {},  # the assets' defaults
}
"""Profile -> asset -> config values (fields of that asset's run config)."""

C = TypeVar("C", bound=dg.Config)


def budget_profile(entry: CatalogEntry, device: torch.device) -> str:
    """The partition's profile: ``SAE_ASSETS_BUDGET``, else the catalog entry's, else by device type."""
    return settings.budget() or entry.budget or ("gpu" if device.type == "cuda" else "cpu")


def with_budget(context: dg.AssetExecutionContext, config: C, asset: str, entry: CatalogEntry,
                device: torch.device) -> tuple[C, str]:
    """``config`` with the profile's values for the fields the run config did not set, and the profile's name."""
    profile = budget_profile(entry, device)
    given = run_config_fields(context, config)
    values = {k: v for k, v in PROFILES[profile].get(asset, {}).items() if k not in given}
    if values:
        context.log.info("Budget profile %r for %s: %s (set any of them in the run config to override)",
                         profile, asset, ", ".join(f"{k}={v}" for k, v in values.items()))
    return config.model_copy(update=values), profile


def run_config_fields(context: dg.AssetExecutionContext, config: dg.Config) -> set[str]:
    """The config fields the run names for this step, whatever their values: read from the run config as submitted.
    (``config.model_fields_set`` is not it: Dagster leaves out a value equal to the field's default, so
    ``precision: float32`` would not count as set, and puts in every enum field's default.) A directly invoked
    asset has no run: then the config object's own set fields."""
    try:
        run_config, name = context.run.run_config, context.op_execution_context.op.name
    except dg.DagsterError:  # DagsterInvalidPropertyError: invoked directly, no run
        return set(config.model_fields_set)
    ops = run_config.get("ops") or {}
    step = ops.get(name) if isinstance(ops, dict) else None
    given = step.get("config") if isinstance(step, dict) else None
    return set(given) if isinstance(given, dict) else set()
