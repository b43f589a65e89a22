"""Optimized prompts (GCG / EPO and continuous) on a tiny random TransformerLens model and a tiny TopK SAE."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sae_assets.core.prompts.continuous import optimize_continuous
from sae_assets.core.prompts.objective import FeatureObjective
from sae_assets.core.prompts.optimize import PromptOptConfig, optimize_discrete, optimize_features
from sae_assets.core.prompts.seeds import example_prompt
from tests.builders import build_tiny_lm, build_topk_sae

HOOK = "blocks.1.hook_resid_post"
FAST = dict(max_steps=30, top_k=8, batch_size=32, patience=10, restarts=0)  # one search per call


@pytest.fixture(scope="module")
def lm():
    return build_tiny_lm()


@pytest.fixture(scope="module")
def sae():
    return build_topk_sae()


def clean(lm, sae, tokens: list[int], feature: int, hook: str = HOOK) -> torch.Tensor:
    """The feature's activation at every position of ``tokens`` (no BOS: the tiny model has no tokenizer)."""
    with torch.inference_mode():
        return sae.encode(lm.hook_activations(torch.tensor([tokens]), hook))[0, :, feature]


def clean_ce(lm, tokens: list[int]) -> float:
    with torch.inference_mode():
        logp = lm.model(torch.tensor([tokens]))[0, :-1].log_softmax(-1)
    return float(-logp.gather(1, torch.tensor(tokens[1:])[:, None]).mean())


def test_discrete_beats_random_prompts_and_reports_a_clean_activation(lm, sae) -> None:
    random = torch.randint(50, (256, 4), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        random_best = sae.encode(lm.hook_activations(random, HOOK))[:, -1].amax(0)  # [d_sae]
    for feature in (1, 2, 4, 6):
        result = optimize_discrete(lm, HOOK, sae, feature, PromptOptConfig(length=4, **FAST))
        assert result.method == "discrete" and len(result.token_ids) == 4 and result.bos_token_id is None
        assert result.activation > result.trajectory[0]  # better than its random start
        assert result.activation > float(random_best[feature])  # and than the best of 256 random prompts
        acts = clean(lm, sae, result.token_ids, feature)
        assert result.activation == pytest.approx(float(acts[-1]), abs=1e-5)
        assert result.position_activations == pytest.approx(acts.tolist(), abs=1e-5)
        assert result.cross_entropy == pytest.approx(clean_ce(lm, result.token_ids), abs=1e-4)
        assert len(result.trajectory) == result.steps + 1
        assert all(b >= a for a, b in itertools.pairwise(result.trajectory))
        assert result.trajectory[-1] == pytest.approx(result.activation, abs=1e-5)


def test_reaches_the_brute_force_optimum_of_two_token_prompts(lm, sae) -> None:
    pairs = torch.tensor(list(itertools.product(range(50), repeat=2)))
    with torch.inference_mode():
        best = sae.encode(lm.hook_activations(pairs, HOOK))[:, -1].amax(0)
    cfg = PromptOptConfig(length=2, max_steps=40, top_k=8, batch_size=32, patience=15, restarts=0)
    features = [f for f in range(12) if best[f] > 0][:8]
    ratios = [optimize_discrete(lm, HOOK, sae, f, cfg).activation / float(best[f]) for f in features]
    assert len(ratios) == 8 and min(ratios) > 0.75, ratios
    assert sum(r > 0.999 for r in ratios) >= 5, ratios


def test_constructed_feature_finds_its_token(lm) -> None:
    """Hook = token embedding (positional embedding zeroed); the feature reads the direction of token 37 only."""
    lm = build_tiny_lm()
    hook, target, feature = "blocks.0.hook_resid_pre", 37, 5
    sae = build_topk_sae(hook_name=hook)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        direction = torch.randn(16, generator=g)
        direction /= direction.norm()
        lm.model.embed.W_E.copy_(torch.randn(50, 16, generator=g) * 0.3)
        lm.model.embed.W_E[target] = 3 * direction
        lm.model.pos_embed.W_pos.zero_()
        sae.b_dec.zero_()
        sae.W_enc[:, feature] = direction
        sae.b_enc[feature] = 0
    assert int(clean(lm, sae, list(range(50)), feature, hook).argmax()) == target  # the known optimum
    last = optimize_discrete(lm, hook, sae, feature, PromptOptConfig(length=5, **FAST))
    assert last.token_ids[-1] == target and last.activation == pytest.approx(3.0, abs=1e-4)
    anywhere = optimize_discrete(lm, hook, sae, feature, PromptOptConfig(length=5, position="any", **FAST))
    assert target in anywhere.token_ids and anywhere.activation == pytest.approx(3.0, abs=1e-4)
    relaxed = optimize_continuous(lm, hook, sae, feature, PromptOptConfig(length=5, continuous_steps=100, patience=30))
    assert relaxed.token_ids[-1] == target and relaxed.activation == pytest.approx(3.0, abs=1e-4)


def test_early_stop_on_a_plateau(lm) -> None:
    """A feature that reads nothing (zero encoder column, large bias) is equally active on every prompt."""
    sae = build_topk_sae()
    with torch.no_grad():
        sae.W_enc[:, 3] = 0
        sae.b_enc[3] = 10.0
    result = optimize_discrete(lm, HOOK, sae, 3, PromptOptConfig(length=4, max_steps=50, patience=4, restarts=0))
    assert result.stopped_early and result.steps == 4
    assert result.trajectory == pytest.approx([result.activation] * 5)
    assert result.activation == pytest.approx(10.0 - float(sae.b_dec.detach() @ sae.W_enc[:, 3].detach()), abs=1e-4)
    again = optimize_discrete(lm, HOOK, sae, 3, PromptOptConfig(length=4, max_steps=50, patience=4, restarts=2))
    assert again.extra["restarts"] == 2 and again.steps == 12 and again.stopped_early  # 3 plateaus of 4 steps


def test_restarts_keep_the_best_prompt(lm, sae) -> None:
    cfg = PromptOptConfig(length=3, max_steps=24, patience=2, batch_size=8, top_k=4, restarts=5)
    result = optimize_discrete(lm, HOOK, sae, 5, cfg)
    assert result.extra["restarts"] >= 1  # tiny candidate sets plateau quickly
    assert all(b >= a for a, b in itertools.pairwise(result.trajectory))  # the best so far, across restarts
    assert result.trajectory[-1] == pytest.approx(result.activation, abs=1e-5)
    assert result.activation == pytest.approx(max(result.trajectory), abs=1e-5)


def test_position_any_takes_the_maximum_over_positions(lm, sae) -> None:
    for position in ("last", "any"):
        result = optimize_discrete(lm, HOOK, sae, 6, PromptOptConfig(length=5, position=position, **FAST))
        acts = clean(lm, sae, result.token_ids, 6)
        expected = acts[-1] if position == "last" else acts.max()
        assert result.activation == pytest.approx(float(expected), abs=1e-5)
        assert len(result.position_activations) == 5
    # the last position is one of the positions, so "any" may only be higher on the prompt it optimized
    assert result.activation >= result.position_activations[-1]


def test_fluency_weight_lowers_the_cross_entropy(lm, sae) -> None:
    for feature in (1, 2, 3):
        plain = optimize_discrete(lm, HOOK, sae, feature, PromptOptConfig(length=4, **FAST))
        fluent = optimize_discrete(lm, HOOK, sae, feature, PromptOptConfig(length=4, fluency_weight=1.0, **FAST))
        assert fluent.cross_entropy < plain.cross_entropy
        assert fluent.cross_entropy == pytest.approx(clean_ce(lm, fluent.token_ids), abs=1e-4)


def test_continuous_reports_real_tokens_and_their_clean_activation(lm, sae) -> None:
    allowed = torch.zeros(50, dtype=torch.bool)
    allowed[10:30] = True
    for method in (optimize_continuous, optimize_discrete):
        cfg = PromptOptConfig(length=4, continuous_steps=60, patience=20, max_steps=20)
        result = method(lm, HOOK, sae, 4, cfg, allowed_tokens=allowed)
        assert all(10 <= t < 30 for t in result.token_ids)
        assert result.activation == pytest.approx(float(clean(lm, sae, result.token_ids, 4)[-1]), abs=1e-5)
        assert all(b >= a for a, b in itertools.pairwise(result.trajectory))
    assert result.activation > 0 and math.isfinite(result.cross_entropy)


def test_invalid_arguments_raise_clear_errors(lm, sae) -> None:
    with pytest.raises(ValueError, match="length must be >= 1"):
        PromptOptConfig(length=0)
    with pytest.raises(ValueError, match="position must be 'last' or 'any'"):
        PromptOptConfig(position="first")
    with pytest.raises(ValueError, match="Feature 32 is outside the SAE: d_sae is 32"):
        optimize_features(lm, HOOK, sae, [0, 32], PromptOptConfig(length=2, max_steps=1))
    with pytest.raises(ValueError, match="d_sae is 32"):
        optimize_discrete(lm, HOOK, sae, -1, PromptOptConfig(length=2))
    with pytest.raises(ValueError, match="Unknown prompt optimization method"):
        optimize_features(lm, HOOK, sae, [0], PromptOptConfig(length=2), methods=["annealing"])
    with pytest.raises(ValueError, match="allowed_tokens"):
        optimize_discrete(lm, HOOK, sae, 0, PromptOptConfig(length=2), allowed_tokens=torch.zeros(50, dtype=bool))


def test_optimize_features_runs_each_feature_and_method(lm, sae) -> None:
    messages: list[str] = []
    cfg = PromptOptConfig(length=3, max_steps=3, continuous_steps=3, patience=10, report_every_s=0.0)
    results = optimize_features(lm, HOOK, sae, [2, 5], cfg, methods=("discrete", "continuous"), report=messages.append)
    assert [(r.feature, r.method) for r in results] == [(2, "discrete"), (2, "continuous"),
                                                         (5, "discrete"), (5, "continuous")]
    assert all(r.steps == 3 and len(r.trajectory) == 4 for r in results)
    assert any("feature 5" in m and "3/3 steps" in m for m in messages)


def test_out_of_memory_halves_the_candidate_batch(lm, sae, monkeypatch: pytest.MonkeyPatch) -> None:
    score = FeatureObjective._score

    def small_memory(self, tokens):
        if tokens.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return score(self, tokens)

    monkeypatch.setattr(FeatureObjective, "_score", small_memory)
    messages: list[str] = []
    result = optimize_discrete(lm, HOOK, sae, 2, PromptOptConfig(length=4, **FAST), report=messages.append)
    assert result.batch_size == 8 and result.activation > result.trajectory[0]
    assert sum("Out of memory" in m for m in messages) == 2  # 32 -> 16 -> 8, once


@pytest.mark.slow
def test_smollm2_bridge(smollm2) -> None:
    """The TransformerBridge path: gradients through the embeddings, BOS prepended, finite CE, clean activation."""
    hook, feature = "blocks.3.hook_resid_post", 7
    sae = build_topk_sae(d_in=576, d_sae=256, k=8, hook_name=hook)
    cfg = PromptOptConfig(length=5, max_steps=3, top_k=16, batch_size=8, continuous_steps=3, fluency_weight=0.1)
    discrete = optimize_discrete(smollm2, hook, sae, feature, cfg)
    continuous = optimize_continuous(smollm2, hook, sae, feature, cfg)
    special = set(smollm2.tokenizer.all_special_ids)
    for result in (discrete, continuous):
        assert result.bos_token_id == smollm2.bos_token_id and len(result.token_strings) == 5
        assert math.isfinite(result.cross_entropy) and result.cross_entropy > 0
        assert not special & set(result.token_ids)
        tokens = torch.tensor([[smollm2.bos_token_id, *result.token_ids]])
        with torch.inference_mode():
            expected = sae.encode(smollm2.hook_activations(tokens, hook))[0, -1, feature]
        assert result.activation == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
    assert discrete.activation > discrete.trajectory[0]


def test_discrete_search_starts_from_the_given_prompt(lm, sae) -> None:
    cfg = PromptOptConfig(length=3, max_steps=0, continuous_steps=0)
    results = optimize_features(lm, HOOK, sae, [2, 5], cfg, methods=("discrete", "continuous"),
                                init_prompts={2: [7, 8, 9]})
    assert results[0].token_ids == [7, 8, 9]  # no step taken: the start is the answer
    assert results[2].token_ids != [7, 8, 9] and len(results[2].token_ids) == 3  # feature 5: random start


def test_example_prompt_ends_at_the_peak() -> None:
    ids = [0, 11, 12, 13, 14, 15]  # a window starting with the document's BOS
    assert example_prompt(ids, peak=4, length=3, first=1) == [12, 13, 14]
    assert example_prompt(ids, peak=4, length=4, first=1) == [11, 12, 13, 14]
    assert example_prompt(ids, peak=4, length=5, first=1) is None  # would include BOS
    assert example_prompt(ids, peak=4, length=5) == [0, 11, 12, 13, 14]  # a window inside the document
    assert example_prompt(ids, peak=6, length=2) is None


def test_bf16_search_still_reports_a_float32_measurement(lm, sae) -> None:
    """precision bfloat16 runs the search's forwards under autocast; the prompt found is measured by a float32
    forward, so its activation is the clean one."""
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, auto"):
        PromptOptConfig(precision="half")
    result = optimize_discrete(lm, HOOK, sae, 2, PromptOptConfig(length=4, precision="bfloat16", **FAST))
    acts = clean(lm, sae, result.token_ids, 2)
    assert result.activation == pytest.approx(float(acts[-1]), abs=1e-5)
    assert result.position_activations == pytest.approx(acts.tolist(), abs=1e-5)


def reference_gradient(obj: FeatureObjective, tokens: torch.Tensor) -> torch.Tensor:
    """The gradient as first written: autograd through ``one_hot @ W_E`` (straight-through) and a full log-softmax."""
    one_hot = torch.nn.functional.one_hot(tokens, obj.W_E.shape[0]).to(obj.W_E.dtype).requires_grad_()

    def embed(act: torch.Tensor, hook) -> torch.Tensor:
        emb = one_hot @ obj.W_E
        return act + torch.nn.functional.pad(emb - emb.detach(), (0, 0, obj.n_bos, 0))[None].to(act.dtype)

    weight = obj.cfg.fluency_weight
    with torch.enable_grad():
        acts, logits = obj.run(obj.with_bos(tokens[None]), embed, logits=weight > 0)
        objective = obj.reduce(obj.feature_values(acts)[1], for_gradient=True)[0]
        if weight > 0:
            logp = logits[:, :-1].float().log_softmax(-1)
            objective = objective + weight * (one_hot[None, 1:] * logp).sum(-1).mean(1)[0]
        (grad,) = torch.autograd.grad(objective, one_hot)
    return grad.float()


@pytest.mark.parametrize(("fluency", "position"), [(0.0, "last"), (0.5, "last"), (0.5, "any")])
def test_gradient_and_cross_entropy_equal_the_reference(lm, sae, fluency: float, position: str) -> None:
    """The one-hot gradient without the one-hot forward, and CE by log-sum-exp, are what the one-hot forward and
    the full log-softmax compute (float rounding)."""
    cfg = PromptOptConfig(length=5, fluency_weight=fluency, position=position)
    for feature in (1, 6):
        obj = FeatureObjective(lm, HOOK, sae, feature, cfg, None, None)
        tokens = obj.random_prompt()
        assert obj.gradient(tokens).shape == (5, 50)
        torch.testing.assert_close(obj.gradient(tokens), reference_gradient(obj, tokens), rtol=1e-5, atol=1e-6)
    batch = torch.randint(50, (6, 7), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        logits = lm.model(batch)
    expected = -logits[:, :-1].log_softmax(-1).gather(2, batch[:, 1:, None]).squeeze(2).mean(1)
    torch.testing.assert_close(obj.cross_entropy(logits, batch), expected, rtol=1e-5, atol=1e-6)
