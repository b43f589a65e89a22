"""The one-pass scan against hand counts and a direct dense computation."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from sae_assets.core.sae.metrics import evaluate_sae
from sae_assets.core.scan.activation_examples import ExampleConfig
from sae_assets.core.scan.activation_scan import ScanConfig, document_batches, run_scan
from sae_assets.core.scan.cooccurrence import dense_counts
from tests.builders import OneHotModel, ReluSae, build_tiny_lm, build_topk_sae

CPU = torch.device("cpu")
HOOK = "blocks.1.hook_resid_post"


def _strings(ids: list[int]) -> list[str]:
    return [f"<{i}>" for i in ids]


def _scan(model, sae, docs, **overrides):
    examples = overrides.pop("examples", ExampleConfig(top_k=3, n_quantiles=2, per_quantile=1, reservoir=16,
                                                       n_random=4, radius=3))
    cfg = ScanConfig(examples=examples, **{"window": 2, "batch_tokens": 64, **overrides})
    messages: list[str] = []
    result = run_scan(model, HOOK, sae, iter(docs), sum(len(d) for _, d in docs), 0, cfg, CPU, _strings,
                      messages.append)
    return result, messages


def test_hand_counted_corpus() -> None:
    # BOS = 0. Doc 0 -> windows [1 2] [3 4], remainder [5] dropped. Doc 1 -> windows [1 3] [1 3].
    docs = [(0, [0, 1, 2, 3, 4, 5]), (1, [0, 1, 3, 1, 3])]
    result, _ = _scan(OneHotModel(6), ReluSae(6), docs)
    assert result.n_windows == 4 and result.n_documents == 2
    expected = torch.zeros((6, 6), dtype=torch.int64)
    for i, j, c in [(1, 1, 3), (2, 2, 1), (3, 3, 3), (4, 4, 1), (1, 2, 1), (3, 4, 1), (1, 3, 2)]:
        expected[i, j] = expected[j, i] = c
    assert torch.equal(result.cooccurrence.counts().long(), expected)
    assert torch.equal(dense_counts(result.cooccurrence.to_frame(), 6).long(), expected)

    stats = {r["feature"]: r for r in result.feature_stats.iter_rows(named=True)}
    assert stats[1]["n_tokens_active"] == 3 and stats[1]["density"] == pytest.approx(3 / 9)
    assert stats[1]["n_docs_active"] == 2 and stats[1]["max_activation"] == 1.0
    assert stats[1]["activation_entropy"] == pytest.approx(-(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3)))
    assert stats[5]["n_tokens_active"] == 1 and stats[5]["activation_entropy"] == 0.0  # one document
    assert stats[0]["n_tokens_active"] == 0  # BOS is never counted
    assert result.reconstruction.explained_variance == pytest.approx(1.0)
    assert result.reconstruction.l0 == pytest.approx(1.0)
    assert result.reconstruction.dead_fraction == pytest.approx(1 / 6)

    top = result.examples.filter((pl.col("kind") == "top") & (pl.col("feature") == 4)).row(0, named=True)
    assert (top["doc_index"], top["token_position"], top["activation"]) == (0, 4, 1.0)
    # window of radius 3 around position 4 inside [1, 6): positions 1..5 (BOS excluded)
    assert top["window_start"] == 1 and top["token_ids"] == [1, 2, 3, 4, 5]
    assert top["tokens"] == ["<1>", "<2>", "<3>", "<4>", "<5>"]
    assert top["token_activations"] == [0.0, 0.0, 0.0, 1.0, 0.0]


def _brute_force(lm, sae, docs, window):
    """Per document, batch 1, everything dense."""
    peaks: dict[int, list[float]] = {}
    per_doc, xs = [], []
    counts = torch.zeros((sae.cfg.d_sae, sae.cfg.d_sae), dtype=torch.int64)
    with torch.no_grad():
        for _, ids in docs:
            x = lm.hook_activations(torch.tensor([ids]), HOOK)[0, 1:]  # BOS dropped
            feats = sae.encode(x)
            per_doc.append(feats)
            xs.append(x)
            n_w = feats.shape[0] // window
            if n_w:
                p = (feats[: n_w * window].reshape(n_w, window, -1).amax(1) > 0).long()
                counts += p.T @ p
            for f in range(feats.shape[1]):
                if feats[:, f].max() > 0:
                    peaks.setdefault(f, []).append(float(feats[:, f].max()))
    allf = torch.cat(per_doc)
    return allf, per_doc, counts, peaks, torch.cat(xs)


@pytest.fixture(scope="module")
def tiny():
    lm = build_tiny_lm()
    sae = build_topk_sae(d_in=16, d_sae=32, k=4)
    g = torch.Generator().manual_seed(1)
    docs = [(i, [0] + torch.randint(1, 50, (int(torch.randint(3, 40, (1,), generator=g)),), generator=g).tolist())
            for i in range(30)]
    return lm, sae, docs


def test_matches_dense_computation_for_any_batch_size(tiny) -> None:
    lm, sae, docs = tiny
    allf, per_doc, counts, peaks, x = _brute_force(lm, sae, docs, window=4)
    results = [_scan(lm, sae, docs, window=4, batch_tokens=bt, reconstruction_sample=0, profile_documents=12)[0]
               for bt in (16, 100, 10_000)]
    reference = evaluate_sae(sae, x)
    for result in results:
        assert result.reconstruction.explained_variance == pytest.approx(reference.explained_variance, rel=1e-4)
        assert result.reconstruction.l0 == pytest.approx(reference.l0)
        assert result.reconstruction.n_tokens == x.shape[0] == result.reconstruction.n_reconstructed
        stats = result.feature_stats.sort("feature")
        active = allf > 0
        assert stats["n_tokens_active"].to_list() == active.sum(0).tolist()
        np.testing.assert_allclose(stats["max_activation"].to_numpy(), allf.amax(0).numpy(), rtol=1e-5)
        mean = torch.where(active.sum(0) > 0, allf.sum(0) / active.sum(0).clamp(min=1), 0)
        np.testing.assert_allclose(stats["mean_activation"].to_numpy(), mean.numpy(), rtol=1e-4, atol=1e-6)
        assert stats["n_docs_active"].to_list() == sum((d > 0).any(0).long() for d in per_doc).tolist()
        assert torch.equal(dense_counts(result.cooccurrence.to_frame(), 32).long(), counts)
        profiles = result.profiles.sort("feature")["profile"].list.to_array(12).to_numpy()  # docs 0..11
        assert result.profile_documents == list(range(12))
        np.testing.assert_allclose(profiles, torch.stack([d.sum(0) for d in per_doc[:12]], 1).numpy(),
                                   rtol=1e-5, atol=1e-6)
        for f, values in peaks.items():  # top-k really are the k largest document peaks
            got = result.examples.filter((pl.col("kind") == "top") & (pl.col("feature") == f)).sort("rank")
            np.testing.assert_allclose(got["activation"].to_numpy(), sorted(values, reverse=True)[:3], rtol=1e-5)
    first = results[0]
    for other in results[1:]:
        np.testing.assert_allclose(other.feature_stats["activation_entropy"].to_numpy(),
                                   first.feature_stats["activation_entropy"].to_numpy(), rtol=1e-4, atol=1e-6)
        assert other.cooccurrence.to_frame().equals(first.cooccurrence.to_frame())


def test_explained_variance_from_a_token_sample(tiny) -> None:
    lm, sae, docs = tiny
    *_, x = _brute_force(lm, sae, docs, window=4)
    result, _ = _scan(lm, sae, docs, window=4, batch_tokens=100, reconstruction_sample=8)
    assert result.reconstruction.n_reconstructed < x.shape[0] == result.reconstruction.n_tokens
    assert result.reconstruction.explained_variance == pytest.approx(evaluate_sae(sae, x).explained_variance, abs=0.15)


def test_quantile_and_random_examples(tiny) -> None:
    lm, sae, docs = tiny
    result, _ = _scan(lm, sae, docs, window=4)
    ex = result.examples
    quant = ex.filter(pl.col("kind") == "quantile")
    assert quant.group_by("feature").len()["len"].max() <= 2
    assert quant["quantile"].is_in([0, 1]).all() and (quant["activation"] > 0).all()
    bins = quant.group_by("feature", "quantile").agg(pl.col("activation").min().alias("lo"),
                                                    pl.col("activation").max().alias("hi"))
    low, high = bins.filter(pl.col("quantile") == 0), bins.filter(pl.col("quantile") == 1)
    paired = low.join(high, on="feature", suffix="_1")
    assert paired.height > 10 and (paired["hi"] <= paired["lo_1"]).all()  # bins ordered by activation
    rand = ex.filter(pl.col("kind") == "random")
    assert rand.height == 4 * 32
    assert rand.group_by("rank").agg(pl.col("doc_index").n_unique())["doc_index"].max() == 1  # shared windows
    for row in ex.iter_rows(named=True):  # each window is a real slice of its document
        ids = dict(docs)[row["doc_index"]]
        assert row["token_ids"] == ids[row["window_start"] : row["window_start"] + len(row["token_ids"])]
        assert row["window_start"] >= 1 and len(row["token_ids"]) <= 7


class _OomAbove:
    """Raises CUDA's out-of-memory error for batches above a size, as a GPU would."""

    def __init__(self, model, limit: int) -> None:
        self.model, self.limit, self.calls = model, limit, 0

    def hook_activations(self, tokens, hook_name):
        self.calls += 1
        if tokens.numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model.hook_activations(tokens, hook_name)


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny) -> None:
    lm, sae, docs = tiny
    reference, _ = _scan(lm, sae, docs, window=4, batch_tokens=10_000)
    result, messages = _scan(_OomAbove(lm, 200), sae, docs, window=4, batch_tokens=10_000)
    assert any("batch size halved" in m for m in messages)
    assert result.batch_tokens < 10_000
    assert result.feature_stats["n_tokens_active"].equals(reference.feature_stats["n_tokens_active"])
    assert result.cooccurrence.to_frame().equals(reference.cooccurrence.to_frame())
    with pytest.raises(RuntimeError, match="single document"):
        _scan(_OomAbove(lm, 5), sae, docs, window=4, batch_tokens=10_000)


def test_documents_shorter_than_a_window_are_an_error() -> None:
    with pytest.raises(ValueError, match="shorter than 8 tokens"):
        _scan(OneHotModel(6), ReluSae(6), [(0, [0, 1, 2, 3]), (1, [0, 4])], window=8)


def test_batches_are_padded_within_budget() -> None:
    docs = [(i, [0] * n) for i, n in enumerate([5, 50, 7, 48, 6, 3])]
    batches = list(document_batches(iter(docs), lambda: 100, chunk=4))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(len(d) for _, d in batch) <= 100
    assert sorted(i for b in batches for i, _ in b) == list(range(6))


def test_documents_are_streamed_not_held(tiny) -> None:
    """The scan pulls documents lazily: at any forward, at most one read-ahead chunk is waiting."""
    lm, sae, _ = tiny
    pulled = {"n": 0}
    scanned = {"n": 0}
    backlog: list[int] = []

    def documents():
        for i in range(400):
            pulled["n"] += 1
            yield i, [0, *[(7 * i + j) % 49 + 1 for j in range(12)]]

    class Counting:
        def hook_activations(self, tokens, hook_name):
            backlog.append(pulled["n"] - scanned["n"])
            scanned["n"] += tokens.shape[0]
            return lm.hook_activations(tokens, hook_name)

    cfg = ScanConfig(window=4, batch_tokens=130, chunk_documents=32,
                     examples=ExampleConfig(top_k=2, n_quantiles=2, per_quantile=1, reservoir=4, n_random=2, radius=2))
    result = run_scan(Counting(), HOOK, sae, documents(), 400 * 13, 0, cfg, CPU, _strings)
    assert result.n_documents == 400 and scanned["n"] == 400
    assert max(backlog) <= 32


def test_compiled_peaks_give_the_same_tables(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large scan takes each document's peaks from the compiled kernel, a small one from torch: same tables."""
    import sae_assets.core.scan.document_peaks as peaks

    lm, sae, docs = tiny
    small, _ = _scan(lm, sae, docs, window=4, batch_tokens=100)
    monkeypatch.setattr(peaks, "COMPILED_FROM", 1)
    calls: list[bool] = []
    kernel = peaks._peaks
    monkeypatch.setattr(peaks, "_peaks", lambda *args: calls.append(True) or kernel(*args))
    large, _ = _scan(lm, sae, docs, window=4, batch_tokens=100)
    assert calls and not small.examples.is_empty()
    assert large.feature_stats.equals(small.feature_stats) and large.examples.equals(small.examples)
    assert large.profiles.equals(small.profiles)
