"""The SAE page's data (SaeReader) and its JSON API (/api/sae) on a small lake: the eval card and its flags, the
density histogram, label quality, SFAL NDCG over explained features, the feature lists, a partition without
sae_evals or labels (each section names its asset), unknown partitions (404) and bad parameters (400)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from starlette.testclient import TestClient

from sae_assets import settings
from sae_assets.resources.lake import LakeResource
from sae_assets.viewer.feature_data import FeatureReader
from sae_assets.viewer.sae_data import SAE_SECTIONS, SaeReader
from sae_assets.viewer.sae_sections import EVAL_COLUMNS, ce_loss_flag
from sae_assets.viewer.server import build_app
from tests.viewer.test_feature_data import LAYER, MODEL, N, write_lake

PARTIAL = LAYER + 1  # feature_stats only: no sae_evals, labels or SFAL
EDGES = np.arange(-8.0, 0.01, 0.25)  # as sae_assets.core.sae.evals.DENSITY_EDGES
SOURCES = ("llm", "keywords", "explanation")
UNSCORED = (18, 19)  # labelled features without a finite score
NO_EXPLANATION = (N - 2, N - 1)  # alignment_scores.has_explanation false


def densities() -> np.ndarray:
    """feature_stats.density of write_lake: f / 1000 (feature 0 dead)."""
    return np.arange(N) / 1000


def evals_row(ce_loss_score: float = -0.25) -> pl.DataFrame:
    """A sae_evals row as eval_row writes it: the live latents' log10 densities binned over EDGES."""
    live = densities()[densities() > 0]
    histogram, _ = np.histogram(np.log10(live), bins=EDGES)
    values: dict[str, object] = {
        "hook_name": "blocks.3.hook_resid_post", "d_sae": N, "corpus": "demo-corpus", "context_size": 128,
        "n_contexts": 8, "held_out_from_document": 9000, "n_tokens": 1000, "explained_variance": 0.8, "mse": 1.5,
        "cossim": 0.9, "l2_norm_in": 10.0, "l2_norm_out": 9.0, "l2_ratio": 0.9, "relative_reconstruction_bias": 1.1,
        "l1": 40.0, "l0": 12.5, "l0_p10": 8.0, "l0_p50": 12.0, "l0_p90": 17.0, "l0_max": 30.0,
        "dead_fraction": 1 / N, "dense_fraction": 0.0, "density_log10_edges": [EDGES.tolist()],
        "density_histogram": [histogram.tolist()], "ce_loss_without_sae": 3.0, "ce_loss_with_sae": 4.0,
        "ce_loss_with_ablation": 10.0, "ce_loss_score": ce_loss_score, "delta_lm_loss": 1.0,
        "kl_div_with_sae": 0.9, "kl_div_with_ablation": 7.0, "kl_div_score": 0.87,
        "verdict": "CE loss score -0.250: the model does worse with this SAE spliced in than with the hook zeroed.",
        "seconds": 12.5}
    frame = pl.DataFrame({k: v if isinstance(v, list) else [v] for k, v in values.items()},
                         schema_overrides={"density_log10_edges": pl.List(pl.Float64),
                                           "density_histogram": pl.List(pl.Int64)})
    assert frame.columns == EVAL_COLUMNS
    return frame


def labels_frame() -> pl.DataFrame:
    """Features 0..N-5 labelled, the winner cycling llm, keywords, explanation; score f / 100, none for UNSCORED."""
    n = N - 4
    source = [SOURCES[f % 3] for f in range(n)]
    score = [float("nan") if f in UNSCORED else f / 100 for f in range(n)]
    return pl.DataFrame({
        "feature": pl.Series(range(n), dtype=pl.Int32), "label": [f"{source[f]} label {f}" for f in range(n)],
        "label_source": source, "score": score, "label_llm": [f"llm {f}" for f in range(n)],
        "score_llm": [0.6] * n, "label_keywords": [f"kw {f}" for f in range(n)], "score_keywords": [None] * n,
        "label_explanation": [f"Explained {f}" for f in range(n)], "score_explanation": [0.8] * n,
        "error": [None] * n}, schema_overrides={"score_keywords": pl.Float64, "error": pl.String})


def ndcg(model: str) -> np.ndarray:
    return np.linspace(0, 1, N) if model == "b-model" else np.full(N, 0.5)


def write_sae_lake(root: str) -> LakeResource:
    """write_lake's tables for MODEL layer LAYER with sae_evals, labels_frame and SFAL scores where the last two
    features have no explanation; feature_stats only for layer PARTIAL."""
    lake = write_lake(root)
    lake.write_partition("sae_evals", evals_row(), MODEL, LAYER)
    lake.write_partition("feature_labels", labels_frame(), MODEL, LAYER)
    lake.write_partition("alignment_scores", pl.DataFrame({
        "feature": pl.Series(list(range(N)) * 2, dtype=pl.Int32), "embedding_model": ["b-model"] * N + ["a-model"] * N,
        "ndcg": np.r_[ndcg("b-model"), ndcg("a-model")],
        "has_explanation": [f not in NO_EXPLANATION for f in range(N)] * 2}), MODEL, LAYER)
    stats = lake.scan_partition("feature_stats", MODEL, LAYER).collect().drop("model", "layer")
    lake.write_partition("feature_stats", stats, MODEL, PARTIAL)
    return lake


@pytest.fixture(scope="module")
def sae_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("sae_lake") / "lake")
    write_sae_lake(root)
    return root


@pytest.fixture(scope="module")
def client(sae_lake: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(build_app(tmp_path_factory.mktemp("exports"), lake_root=sae_lake)) as client:
        yield client


def sae(client: TestClient, **params: object):
    return client.get("/api/sae", params={"model": MODEL, "layer": LAYER, **params})


def test_the_page_has_every_section(client: TestClient) -> None:
    response = sae(client)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    page = response.json()
    assert (page["model"], page["layer"], page["n_features"]) == (MODEL, LAYER, N)
    assert list(page["sections"]) == list(SAE_SECTIONS)
    assert {s["status"] for s in page["sections"].values()} == {"ok"}


def test_eval_card_holds_the_row_and_flags_a_negative_score(client: TestClient) -> None:
    card = sae(client).json()["sections"]["evals"]
    expected = evals_row().drop("density_log10_edges", "density_histogram").row(0, named=True)
    assert {k: card[k] for k in expected} == pytest.approx(expected)
    assert card["ce_loss_flag"] == "negative" and card["low_ce_loss_score"] == 0.5
    assert "density_histogram" not in card
    assert [ce_loss_flag(x, 0.5) for x in (-0.1, 0.0, 0.49, 0.5, 0.99, float("nan"), None)] == \
        ["negative", "low", "low", "ok", "ok", None, None]


def test_the_low_flag_follows_the_checks_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    lake.write_partition("sae_evals", evals_row(-0.25), MODEL, LAYER)
    lake.write_partition("sae_evals", evals_row(0.85), MODEL, PARTIAL)
    reader = SaeReader(FeatureReader(str(tmp_path / "lake")))
    card = lambda layer: reader.page(MODEL, layer)["sections"]["evals"]  # noqa: E731
    monkeypatch.setenv(settings.MIN_CE_LOSS_SCORE, "-0.5")
    assert (card(LAYER)["ce_loss_flag"], card(LAYER)["low_ce_loss_score"]) == ("negative", -0.5)  # below 0: negative
    monkeypatch.setenv(settings.MIN_CE_LOSS_SCORE, "0.9")  # read per page, as the check reads it
    assert (card(PARTIAL)["ce_loss_flag"], card(PARTIAL)["low_ce_loss_score"]) == ("low", 0.9)
    monkeypatch.delenv(settings.MIN_CE_LOSS_SCORE)
    assert card(PARTIAL)["ce_loss_flag"] == "ok" and card(PARTIAL)["low_ce_loss_score"] == 0.5


def test_density_histogram_counts_live_latents(client: TestClient) -> None:
    density = sae(client).json()["sections"]["density"]
    assert density["edges"] == pytest.approx(EDGES.tolist()) and len(density["counts"]) == len(EDGES) - 1
    assert density["counts"] == evals_row()["density_histogram"][0].to_list()
    assert density["n_live"] == N - 1 and density["n_dead"] == 1 and density["dense_log10"] == -1


def test_label_quality_counts_wins_and_mean_scores(client: TestClient) -> None:
    labels = sae(client).json()["sections"]["labels"]
    frame = labels_frame()
    scored = [f / 100 for f in range(N - 4) if f not in UNSCORED]
    assert (labels["n_rows"], labels["unlabelled"], labels["n_scored"]) == (N - 4, 0, len(scored))
    assert labels["mean_score"] == pytest.approx(np.mean(scored))
    by_source = {s["source"]: s for s in labels["sources"]}
    assert [s["source"] for s in labels["sources"]] == ["explanation", "llm", "keywords"]  # PRECEDENCE
    for i, source in enumerate(SOURCES):
        won = [f for f in range(N - 4) if f % 3 == i]
        assert by_source[source]["wins"] == len(won) == frame.filter(pl.col("label_source") == source).height
        assert by_source[source]["mean_score"] == pytest.approx(np.mean([f / 100 for f in won if f not in UNSCORED]))
    assert (by_source["llm"]["candidate_mean_score"], by_source["llm"]["candidate_scored"]) == (0.6, N - 4)
    assert (by_source["keywords"]["candidate_mean_score"], by_source["keywords"]["candidate_scored"]) == (None, 0)


def test_sfal_ndcg_over_features_with_an_explanation(client: TestClient) -> None:
    alignment = sae(client).json()["sections"]["alignment"]
    assert alignment["over"] == "features with an explanation"
    assert [m["embedding_model"] for m in alignment["models"]] == ["a-model", "b-model"]
    b = alignment["models"][1]
    explained = ndcg("b-model")[: N - 2]
    assert (b["n_features"], b["n_explained"]) == (N, N - 2)
    assert b["mean_ndcg"] == pytest.approx(explained.mean()) and b["median_ndcg"] == pytest.approx(np.median(explained))
    assert b["mean_ndcg_all"] == pytest.approx(ndcg("b-model").mean()) != pytest.approx(b["mean_ndcg"])
    assert alignment["models"][0]["mean_ndcg"] == alignment["models"][0]["median_ndcg"] == 0.5


def test_feature_lists_rank_density_and_label_score(client: TestClient) -> None:
    sections = sae(client).json()["sections"]
    densest = sections["densest"]["features"]
    assert [r["feature"] for r in densest] == list(range(N - 1, N - 11, -1))
    assert densest[0] == {"feature": N - 1, "density": pytest.approx((N - 1) / 1000), "label": None}
    assert densest[2]["label"] == "Explained 21"  # no feature_labels row: the explanation
    rarest = sections["rarest"]
    assert [r["feature"] for r in rarest["features"]] == list(range(1, 11)) and rarest["n_dead"] == 1
    best = sections["best_labelled"]["features"]
    ranked = sorted((f for f in range(N - 4) if f not in UNSCORED), key=lambda f: -f)[:10]
    assert [r["feature"] for r in best] == ranked
    assert best[0] == {"feature": 17, "score": 0.17, "label": "explanation label 17", "label_source": "explanation"}


def test_a_partition_without_evals_or_labels_names_the_assets(client: TestClient) -> None:
    response = sae(client, layer=PARTIAL)
    assert response.status_code == 200
    page = response.json()
    sections = page["sections"]
    assert page["n_features"] == N
    missing = {"evals": "sae_evals", "density": "sae_evals", "labels": "feature_labels",
               "alignment": "alignment_scores", "best_labelled": "feature_labels"}
    for name, asset in missing.items():
        assert sections[name]["status"] == "missing" and sections[name]["asset"] == asset, name
        assert sections[name]["message"] == f"materialize {asset} for {MODEL} layer {PARTIAL}", name
    assert sections["densest"]["status"] == sections["rarest"]["status"] == "ok"
    assert sections["densest"]["features"][0] == {"feature": N - 1, "density": pytest.approx((N - 1) / 1000),
                                                  "label": None}


def test_evals_alone_are_a_page(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    lake.write_partition("sae_evals", evals_row(0.93), MODEL, LAYER)
    page = SaeReader(FeatureReader(str(tmp_path / "lake"))).page(MODEL, LAYER)
    assert page["n_features"] == N  # no sae_decoder nor feature_stats: d_sae
    assert page["sections"]["evals"]["ce_loss_flag"] == "ok" and page["sections"]["density"]["status"] == "ok"
    assert page["sections"]["densest"]["message"] == f"materialize feature_stats for {MODEL} layer {LAYER}"


def test_unknown_partitions_are_404_and_bad_parameters_400(client: TestClient) -> None:
    for params in ({"layer": LAYER + 5}, {"model": "other@model"}):
        response = sae(client, **params)
        assert response.status_code == 404 and response.headers["Content-Type"] == "application/json", params
        assert "materialize its assets first" in response.json()["error"], params
    for params in ({"model": "no-at-sign"}, {"model": ""}, {"layer": "-1"}, {"layer": "x"}):
        response = sae(client, **params)
        assert response.status_code == 400 and set(response.json()) == {"error"}, params
    assert client.get("/api/sae", params={"model": MODEL}).status_code == 400
    assert client.post("/api/sae", params={"model": MODEL, "layer": LAYER}).status_code == 405


def test_the_page_is_served_at_sae(client: TestClient) -> None:
    page = client.get("/sae", params={"model": MODEL, "layer": LAYER})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/static/sae_page.js" in page.text and "/static/feature_page.js" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/static/sae_page.js").status_code == 200
    assert client.get("/sae/").status_code == 404
