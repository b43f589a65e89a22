"""The feature page's data (FeatureReader) on a small lake holding every table: each section's contents, missing
and empty sections, Phi against SFAL's phi_from_counts, cosine neighbours, search, and the cache's invalidation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from sae_assets.core.alignment.sfal import phi_from_counts
from sae_assets.core.scan.cooccurrence import COOCCURRENCE_SCHEMA, CooccurrenceCounter
from sae_assets.resources.lake import LakeResource
from sae_assets.viewer.feature_data import SECTIONS, FeatureReader, NotFound

MODEL, LAYER, N, DIM = "smollm2-135m@test-res", 3, 24, 6
SCRIPT = "<script>alert(1)</script>"
WIDTH = 5  # windows of +-2 tokens


def _ints(values: object) -> pl.Series:
    return pl.Series(values, dtype=pl.Int32)


def _example(feature: int, kind: str, rank: int, quantile: int | None, doc: int, peak: int,
             acts: list[float], cut: int = 0) -> dict:
    """A window of WIDTH tokens centred on ``peak``, its first ``cut`` tokens dropped (before the document's
    start), as the scan trims them."""
    acts = acts[cut:]
    return {"feature": feature, "kind": kind, "rank": rank, "quantile": quantile, "activation": max(acts),
            "doc_index": doc, "token_position": peak, "window_start": peak - WIDTH // 2 + cut,
            "token_ids": list(range(len(acts))), "tokens": [f"t{feature}.{i}" for i in range(len(acts))],
            "token_activations": acts}


def examples_frame() -> pl.DataFrame:
    """Per feature: 3 top, 2 quantile bins x 2, 2 random; top and random rank-major as the scan writes them. The
    quantile (bin 1, rank 0) window is top rank 0's window again (same document and tokens)."""
    rows = []
    for rank in range(3):
        rows += [_example(f, "top", rank, None, 100 + rank, 10, [0.0, 1.0, 5.0 - rank, 0.5, 0.0]) for f in range(N)]
    for f in range(N):
        rows.append(_example(f, "quantile", 0, 1, 100, 10, [0.0, 1.0, 5.0, 0.5, 0.0]))
        rows.append(_example(f, "quantile", 1, 1, 200, 7, [0.0, 3.0, 0.25, 0.0, 0.0]))
        rows += [_example(f, "quantile", r, 0, 300 + r, 1 - r, [0.0, 0.0, 0.5, 0.0, 0.0], cut=1 + r)
                 for r in range(2)]
    for rank in range(2):
        rows += [_example(f, "random", rank, None, 900 + rank, 50, [0.0] * WIDTH) for f in range(N)]
    rows[1]["tokens"] = [SCRIPT, "b", "c", "d", "e"]  # feature 1's top rank 0
    return pl.DataFrame(rows, schema={"feature": pl.Int32, "kind": pl.String, "rank": pl.Int32,
                                      "quantile": pl.Int32, "activation": pl.Float32, "doc_index": pl.Int64,
                                      "token_position": pl.Int32, "window_start": pl.Int32,
                                      "token_ids": pl.List(pl.Int32), "tokens": pl.List(pl.String),
                                      "token_activations": pl.List(pl.Float32)})


def cooccurrence(seed: int = 0) -> CooccurrenceCounter:
    """Counts over 40 windows; feature 0 fires in every window (Phi undefined: 0), feature N-1 in none."""
    rng = np.random.default_rng(seed)
    presence = torch.from_numpy(rng.random((40, N)) < np.linspace(0.1, 0.6, N))
    presence[:, 0], presence[:, N - 1] = True, False
    counter = CooccurrenceCounter(N, torch.device("cpu"), block=8)
    counter.add(presence)
    return counter


def embeddings(seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(N, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_labels(lake: LakeResource, prefix: str = "label", layer: int = LAYER,
                 explained: str | None = "Explained") -> None:
    """feature_labels for features 0..N-5 (the last 4 have none): LLM labels "{prefix} f" (feature 1's is SCRIPT)
    scoring 0.75, unscored keyword labels, and explanations "{explained} f" scoring 0.9, which win."""
    n = N - 4
    llm = [SCRIPT if f == 1 else f"{prefix} {f}" for f in range(n)]
    explanation = [None if explained is None else f"{explained} {f}" for f in range(n)]
    lake.write_partition("feature_labels", pl.DataFrame({
        "feature": _ints(range(n)), "label": explanation if explained else llm,
        "label_source": ["explanation" if explained else "llm"] * n, "score": [0.9 if explained else 0.75] * n,
        "label_llm": llm, "score_llm": [0.75] * n, "label_keywords": [f"kw{f}" for f in range(n)],
        "score_keywords": [float("nan")] * n, "label_explanation": explanation,
        "score_explanation": [0.9 if explained else None] * n, "error": [None] * n},
        schema_overrides={"label_explanation": pl.String, "score_explanation": pl.Float64, "error": pl.String}),
        MODEL, layer)


def write_embeddings(lake: LakeResource, seed: int = 0) -> None:
    vectors = embeddings(seed)[: N - 2]  # features N-2, N-1: no explanation, no embedding
    lake.write_partition("explanation_embeddings", pl.DataFrame({
        "feature": _ints(range(N - 2)), "embedding_model": ["all-MiniLM-L6-v2"] * (N - 2),
        "embedding": pl.Series(vectors.tolist(), dtype=pl.List(pl.Float32))}), MODEL, LAYER)


def write_explanations(lake: LakeResource, descriptions: dict[int, str]) -> None:
    n = len(descriptions)
    lake.write_partition("explanations", pl.DataFrame({
        "feature": pl.Series(list(descriptions), dtype=pl.Int64), "description": list(descriptions.values()),
        "explanation_type": ["oai"] * n, "explainer_model": ["gpt"] * n, "source": ["neuronpedia"] * n,
        "n_alternatives": _ints([0] * n)}), MODEL, LAYER)


def write_lake(root: str) -> LakeResource:
    """Every table the page reads, for MODEL layer LAYER."""
    lake = LakeResource(root=root)
    ids = _ints(range(N))
    write = lambda table, frame: lake.write_partition(table, frame, MODEL, LAYER)  # noqa: E731
    write("sae_decoder", pl.DataFrame({"feature": ids, "decoder_norm": np.ones(N, np.float32)}))
    write("feature_stats", pl.DataFrame({
        "feature": ids, "n_tokens_active": np.arange(N) * 10, "density": np.arange(N) / 1000,
        "mean_activation": np.full(N, 1.5, np.float32), "max_activation": np.arange(N, dtype=np.float32),
        "activation_entropy": np.full(N, 2.0, np.float32), "n_docs_active": np.arange(N) * 2}))
    write_labels(lake)
    write_explanations(lake, {f: f"Explained {f}" for f in range(N - 2)})
    write("activation_examples", examples_frame())
    lake.write_partition_batches("cooccurrence", lambda: cooccurrence().record_batches(rows=8),
                                 COOCCURRENCE_SCHEMA, MODEL, LAYER)
    write_embeddings(lake)
    write("logit_effects", pl.DataFrame({
        "feature": ids, "promoted_ids": [[1, 2]] * N, "promoted_tokens": [[SCRIPT, " up"]] * N,
        "promoted_values": [[2.5, 1.0]] * N, "suppressed_ids": [[3]] * N, "suppressed_tokens": [[" down"]] * N,
        "suppressed_values": [[-1.5]] * N}))
    write("feature_map_edges", pl.DataFrame({  # feature f -> f+1 (0.9), f+2 (0.5); the last two features: none
        "source": _ints([f for f in range(N - 2) for _ in range(2)]),
        "target": _ints([f + k for f in range(N - 2) for k in (2, 1)]),
        "similarity": pl.Series([s for _ in range(N - 2) for s in (0.5, 0.9)], dtype=pl.Float32)}))
    write("alignment_scores", pl.DataFrame({
        "feature": _ints(list(range(N)) * 2), "embedding_model": ["b-model"] * N + ["a-model"] * N,
        "ndcg": np.r_[np.linspace(0, 1, N), np.full(N, 0.5)], "has_explanation": [True] * 2 * N}))
    write("feature_clusters", pl.DataFrame({
        "feature": ids, "kept": [f % 2 == 0 for f in range(N)], "cluster": _ints([f % 3 - 1 for f in range(N)]),
        "x": np.zeros(N, np.float32), "y": np.zeros(N, np.float32), "selected": [f == 4 for f in range(N)]}))
    write("optimized_prompts", pl.DataFrame({
        "feature": _ints([4, 4]), "method": ["discrete", "continuous"], "token_ids": [[1, 2], [3, 4]],
        "tokens": [["<bos>", SCRIPT], ["<bos>", " x"]], "text": [f"<bos>{SCRIPT}", "<bos> x"],
        "activation": [8.0, 2.0], "dataset_max_activation": [10.0, 10.0], "ratio": [0.8, 0.2],
        "cross_entropy": [5.0, 9.0]}))
    return lake


@pytest.fixture
def reader(lake_dir: str) -> FeatureReader:
    return FeatureReader(lake_dir)


def test_every_section_from_its_table(reader: FeatureReader) -> None:
    page = reader.page(MODEL, LAYER, 4)
    sections = page["sections"]
    assert list(sections) == list(SECTIONS) and {s["status"] for s in sections.values()} == {"ok"}
    assert (page["model"], page["layer"], page["feature"], page["n_features"]) == (MODEL, LAYER, 4, N)
    assert page["label"] == "Explained 4"  # feature_labels.label: the best-scoring candidate
    labels = sections["labels"]
    assert (labels["label"], labels["label_source"], labels["score"], labels["label_llm"], labels["score_llm"]) == \
        ("Explained 4", "explanation", 0.9, "label 4", 0.75)
    assert (labels["label_keywords"], labels["score_keywords"]) == ("kw4", None)  # NaN is null in JSON
    assert labels["explanations"] == {"status": "ok", "rows": [{"description": "Explained 4", "explanation_type": "oai",
                                                                "explainer_model": "gpt", "source": "neuronpedia"}]}
    assert sections["stats"] == {"status": "ok", "density": 0.004, "max_activation": 4.0, "mean_activation": 1.5,
                                 "activation_entropy": 2.0, "n_docs_active": 8, "n_tokens_active": 40}
    examples = sections["examples"]
    assert examples["counts"] == {"top": 3, "quantile": 4, "random": 2}
    assert [e["rank"] for e in examples["top"]] == [0, 1, 2] and [e["activation"] for e in examples["top"]] == [5, 4, 3]
    assert [q["quantile"] for q in examples["quantiles"]] == [1, 0]  # highest bin first
    assert [[e["rank"] for e in q["examples"]] for q in examples["quantiles"]] == [[0, 1], [0, 1]]
    top = examples["top"][0]
    assert top["tokens"] == [f"t4.{i}" for i in range(5)] and top["token_activations"] == [0, 1, 5, 0.5, 0]
    assert (top["token_position"], top["window_start"], top["peak"], top["doc_index"]) == (10, 8, 2, 100)
    short = examples["quantiles"][1]["examples"][1]  # cut at the document's start: 3 tokens, the peak first
    assert short["token_activations"] == [0.5, 0, 0] and (short["window_start"], short["peak"]) == (0, 0)
    histogram = sections["histogram"]
    # distinct non-zero tokens: top windows 3 x 3 (the quantile copy of rank 0's window counted once), 2 + 1 + 1
    assert histogram["source"] == "activation examples" and histogram["n_values"] == 13
    assert sum(histogram["counts"]) == 13 and len(histogram["edges"]) == len(histogram["counts"]) + 1
    assert histogram["edges"][0] == 0 and histogram["edges"][-1] == 5
    assert sections["logit_effects"]["promoted"] == [{"token": SCRIPT, "id": 1, "value": 2.5},
                                                     {"token": " up", "id": 2, "value": 1.0}]
    assert sections["logit_effects"]["suppressed"] == [{"token": " down", "id": 3, "value": -1.5}]
    assert sections["decoder_neighbours"]["neighbours"] == [
        {"feature": 5, "similarity": 0.9, "label": "Explained 5"}, {"feature": 6, "similarity": 0.5,
                                                                   "label": "Explained 6"}]
    assert sections["alignment"]["scores"] == [
        {"embedding_model": "a-model", "ndcg": 0.5, "has_explanation": True},
        {"embedding_model": "b-model", "ndcg": pytest.approx(4 / (N - 1)), "has_explanation": True}]
    assert sections["cluster"] == {"status": "ok", "kept": True, "cluster": 0, "selected": True}
    prompts = sections["optimized_prompts"]["prompts"]
    assert [(p["method"], p["ratio"], p["tokens"]) for p in prompts] == [("continuous", 0.2, ["<bos>", " x"]),
                                                                         ("discrete", 0.8, ["<bos>", SCRIPT])]
    assert prompts[1]["dataset_max_activation"] == 10 and prompts[1]["cross_entropy"] == 5


@pytest.mark.parametrize("feature", [3, 7, 12])
def test_cooccurring_partners_are_the_top_phi_of_sfal(reader: FeatureReader, feature: int) -> None:
    counter = cooccurrence()
    dense = counter.counts().clone()
    phi = phi_from_counts(dense, counter.n_windows).numpy()
    partners = [j for j in range(N) if j != feature and dense[feature, j] > 0]
    expected = sorted(partners, key=lambda j: (-phi[feature, j], j))[:10]
    section = reader.page(MODEL, LAYER, feature)["sections"]["cooccurring"]
    assert section["n_windows"] == 40 and section["marginal"] == int(dense[feature, feature])
    assert section["n_partners"] == len(partners)
    got = section["partners"]
    assert [p["feature"] for p in got] == expected
    assert [p["phi"] for p in got] == pytest.approx([phi[feature, j] for j in expected], rel=1e-6, abs=1e-9)
    assert [p["count"] for p in got] == [int(dense[feature, j]) for j in expected]
    assert [p["marginal"] for p in got] == [int(dense[j, j]) for j in expected]
    in_every_window = [p for p in got if p["feature"] == 0]
    assert all(p["phi"] == 0 for p in in_every_window)  # undefined: 0, as phi_from_counts


def test_semantic_neighbours_are_the_cosine_top_10(reader: FeatureReader) -> None:
    vectors = embeddings()[: N - 2]
    sims = vectors @ vectors[6]
    sims[6] = -np.inf
    expected = sorted(range(N - 2), key=lambda j: (-sims[j], j))[:10]
    section = reader.page(MODEL, LAYER, 6)["sections"]["semantic_neighbours"]
    assert section["embedding_model"] == "all-MiniLM-L6-v2"
    assert [n["feature"] for n in section["neighbours"]] == expected
    assert [n["similarity"] for n in section["neighbours"]] == pytest.approx(sims[expected], abs=1e-6)
    assert [n["label"] for n in section["neighbours"]] == [f"Explained {f}" for f in expected]


def test_features_without_rows_get_none_and_labels_fall_back(reader: FeatureReader) -> None:
    page = reader.page(MODEL, LAYER, N - 1)  # no label, explanation, embedding, edges, prompts; no co-occurrence
    sections = page["sections"]
    assert page["label"] is None
    for name in ("labels", "decoder_neighbours", "semantic_neighbours", "optimized_prompts"):
        assert sections[name]["status"] == "none" and str(N - 1) in sections[name]["message"], name
    assert sections["labels"]["explanations"]["status"] == "none"
    assert sections["cooccurring"]["status"] == "ok" and sections["cooccurring"]["partners"] == []
    assert reader.page(MODEL, LAYER, N - 3)["label"] == "Explained 21"  # explanation only
    assert reader.page(MODEL, LAYER, 1)["sections"]["labels"]["label_llm"] == SCRIPT


def test_missing_tables_name_the_asset_to_materialize(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    ids = _ints(range(N))
    lake.write_partition("feature_stats", pl.DataFrame({"feature": ids, "density": np.zeros(N)}), MODEL, LAYER)
    write_labels(lake, layer=LAYER + 1)  # the table exists, not this partition
    lake.write_partition("activation_examples", pl.DataFrame({"feature": ids, "kind": ["top"] * N}), MODEL, LAYER + 1)
    reader = FeatureReader(str(tmp_path / "lake"))
    page = reader.page(MODEL, LAYER, 2)
    sections = page["sections"]
    foreign = reader.page(MODEL, LAYER + 1, 2)["sections"]  # a table without the columns: its sections say so
    assert foreign["examples"]["status"] == foreign["histogram"]["status"] == "error"
    assert "rank" in foreign["examples"]["message"] and foreign["labels"]["status"] == "ok"
    assert sections["stats"]["status"] == "ok" and sections["stats"]["density"] == 0
    assert sections["stats"]["max_activation"] is None  # a column the table lacks
    expected = {"labels": "feature_labels", "examples": "activation_examples", "histogram": "activation_examples",
                "logit_effects": "logit_effects", "decoder_neighbours": "feature_map", "cooccurring": "cooccurrence",
                "semantic_neighbours": "explanation_embeddings", "alignment": "alignment_scores",
                "cluster": "feature_clusters", "optimized_prompts": "optimized_prompts"}
    for name, asset in expected.items():
        assert sections[name]["status"] == "missing" and sections[name]["asset"] == asset, name
        assert sections[name]["message"] == f"materialize {asset} for {MODEL} layer {LAYER}", name
    assert sections["labels"]["explanations"]["asset"] == "explanations"
    assert page["n_features"] == N  # from feature_stats when there is no sae_decoder
    with pytest.raises(NotFound, match="out of range"):
        reader.page(MODEL, LAYER, N)
    with pytest.raises(NotFound, match="no table"):
        reader.page(MODEL, LAYER + 2, 0)
    with pytest.raises(NotFound):
        FeatureReader(str(tmp_path / "nothing")).page(MODEL, LAYER, 0)


def test_search_by_text_and_by_index(reader: FeatureReader) -> None:
    found = reader.search(MODEL, LAYER, "EXPLAINED 1")
    assert [r["feature"] for r in found["results"]] == [1] + list(range(10, 20))
    assert found["total"] == 11 and not found["truncated"]
    assert found["results"][0]["label"] == "Explained 1"
    assert reader.search(MODEL, LAYER, "<SCRIPT>")["results"] == [{"feature": 1, "label": "Explained 1"}]
    many = reader.search(MODEL, LAYER, "e")
    assert len(many["results"]) == 20 and many["total"] == N - 2 and many["truncated"]
    assert reader.search(MODEL, LAYER, " 23 ")["results"] == [{"feature": 23, "label": None}]
    assert reader.search(MODEL, LAYER, str(N))["results"] == []
    assert reader.search(MODEL, LAYER, "")["results"] == [] and reader.search(MODEL, LAYER, "zzz")["total"] == 0


def test_rewritten_tables_are_seen_and_caches_follow_versions(tmp_path: Path) -> None:
    lake = write_lake(str(tmp_path / "lake"))
    reader = FeatureReader(str(tmp_path / "lake"), cache_size=4)
    before = reader.page(MODEL, LAYER, 6)["sections"]
    write_labels(lake, prefix="renamed", explained=None)  # relabelled without explanation candidates
    write_explanations(lake, {5: "new words", 21: "only explained"})
    write_embeddings(lake, seed=1)
    after = reader.page(MODEL, LAYER, 6)["sections"]
    assert before["labels"]["label"] == "Explained 6" and after["labels"]["label"] == "renamed 6"
    assert after["decoder_neighbours"]["neighbours"][0] == {"feature": 7, "similarity": 0.9, "label": "renamed 7"}
    assert reader.page(MODEL, LAYER, 4)["sections"]["decoder_neighbours"]["neighbours"][0]["label"] == "renamed 5"
    assert reader.search(MODEL, LAYER, "new words")["results"] == [{"feature": 5, "label": "renamed 5"}]
    assert reader.search(MODEL, LAYER, "only explained")["results"] == [{"feature": 21, "label": "only explained"}]
    vectors = embeddings(1)[: N - 2]
    sims = vectors @ vectors[6]
    sims[6] = -np.inf
    assert [n["feature"] for n in after["semantic_neighbours"]["neighbours"]] == \
        sorted(range(N - 2), key=lambda j: (-sims[j], j))[:10]
    assert before["semantic_neighbours"] != after["semantic_neighbours"]
    keys = reader.tables.cache_keys()
    assert len(keys) <= 4
    version = lake.table_version("explanation_embeddings")
    assert ("embeddings", MODEL, str(LAYER), version) in keys


def test_pages_from_many_threads_agree(reader: FeatureReader) -> None:
    expected = {f: reader.page(MODEL, LAYER, f) for f in (2, 9)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        pages = list(pool.map(lambda f: (f, reader.page(MODEL, LAYER, f)), [2, 9] * 6))
    assert all(page == expected[f] for f, page in pages)
