"""The optimized_prompts table and its per-method summary."""

from __future__ import annotations

import pytest

from sae_assets.core.prompts.config import OptimizedPrompt
from sae_assets.core.prompts.table import PROMPT_SCHEMA, method_summary, prompts_frame


def _prompt(feature: int, method: str, activation: float, steps: int = 4, seconds: float = 2.0) -> OptimizedPrompt:
    return OptimizedPrompt(feature=feature, method=method, token_ids=[5, 6], activation=activation,
                           cross_entropy=3.0, steps=steps, trajectory=[0.0, activation],
                           position_activations=[0.0, activation], seconds=seconds)


def test_ratios_against_the_dataset_max_and_the_summary_per_method() -> None:
    results = [_prompt(1, "discrete", 4.0), _prompt(2, "discrete", 1.0), _prompt(3, "discrete", 9.0),
               _prompt(1, "continuous", 2.0, steps=10, seconds=1.0)]
    frame = prompts_frame(results, {1: 4.0, 2: 2.0, 3: 0.0}, lambda ids: "|".join(map(str, ids)))
    assert frame.schema == PROMPT_SCHEMA
    assert frame["ratio"].to_list() == [1.0, 0.5, None, 0.5]  # no ratio against a zero maximum
    assert frame["text"].to_list() == ["5|6"] * 4 and frame["tokens"].to_list() == [["5", "6"]] * 4
    summary = method_summary(frame)
    assert list(summary) == ["discrete", "continuous"]
    assert summary["discrete"] == {"targets": 3, "mean_activation": pytest.approx(14 / 3, abs=1e-4),
                                   "reached_dataset_max": 0.5, "mean_ratio": 0.75, "mean_cross_entropy": 3.0,
                                   "steps_per_second": 2.0}
    assert summary["continuous"]["reached_dataset_max"] == 0.0 and summary["continuous"]["steps_per_second"] == 10.0
