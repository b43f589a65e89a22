"""The feature page in real headless Chromium: a deep link, links between pages and browser history, search,
a click on the map, sections whose tables are missing, and strings holding HTML shown as text.

The lake holds every table for MODEL layer LAYER (the builders of test_feature_data), feature 1's strings made
hostile; layer SPARSE has a few tables only. The exports hold a feature map of MODEL layer LAYER for the map.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
import requests

from sae_assets.resources.lake import LakeResource
from sae_assets.viewer.feature_data import SECTIONS
from sae_assets.viewer.server import serve_in_thread
from tests.browser import screenshot
from tests.viewer.test_feature_data import LAYER, MODEL, SCRIPT, N, examples_frame, write_labels, write_lake
from tests.viewer.test_viewer import export_layer

PWN_SCRIPT = "<script>window.__pwned=1</script>"
PWN_IMG = '<img src=x onerror="window.__pwned=1">'
SPARSE = LAYER + 1  # sae_decoder, feature_stats, feature_labels and broken explanation_embeddings only
NOT_FOUND = "Failed to load resource: the server responded with a status of 404"
WAIT_MS = 30_000


def _rewrite(lake: LakeResource, table: str, change: Any) -> None:
    frame = lake.scan_partition(table, MODEL, LAYER).collect().drop("model", "layer")
    lake.write_partition(table, change(frame), MODEL, LAYER)


def _set(column: str, where: pl.Expr, value: Any) -> pl.Expr:
    return pl.when(where).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)


def hostile_feature_1(lake: LakeResource) -> None:
    """Feature 1's label, keyword label, explanation, example tokens, a logit token and a prompt hold HTML."""
    one = pl.col("feature") == 1
    _rewrite(lake, "feature_labels", lambda f: f.with_columns(  # the explanation wins, as for every feature
        _set("label", one, PWN_IMG), _set("label_llm", one, PWN_SCRIPT), _set("label_keywords", one, PWN_SCRIPT),
        _set("label_explanation", one, PWN_IMG)))
    _rewrite(lake, "explanations", lambda f: f.with_columns(_set("description", one, PWN_IMG)))
    rows = examples_frame().to_dicts()
    for row in rows:
        if (row["feature"], row["kind"], row["rank"]) == (1, "top", 0):
            row["tokens"] = [PWN_SCRIPT, PWN_IMG, "c", "d", "e"]
    lake.write_partition("activation_examples", pl.DataFrame(rows, schema=examples_frame().schema), MODEL, LAYER)
    _rewrite(lake, "logit_effects", lambda f: f.with_columns(
        pl.when(one).then(pl.lit([PWN_IMG, " up"])).otherwise(pl.col("promoted_tokens")).alias("promoted_tokens")))
    _rewrite(lake, "optimized_prompts", lambda f: pl.concat([f, f.head(1).with_columns(
        pl.lit(1, dtype=f["feature"].dtype).alias("feature"), pl.lit([PWN_IMG]).alias("tokens"),
        pl.lit(PWN_IMG).alias("text"))]))


def sparse_partition(lake: LakeResource) -> None:
    for table in ("sae_decoder", "feature_stats"):  # as layer LAYER's
        lake.write_partition(table, lake.scan_partition(table, MODEL, LAYER).collect().drop("model", "layer"),
                             MODEL, SPARSE)
    write_labels(lake, layer=SPARSE)
    ids = pl.Series(range(N), dtype=pl.Int32)
    ragged = [[1.0, 0.0] if f % 2 else [1.0, 0.0, 0.0] for f in range(N)]  # the matrix cannot be built: an error
    lake.write_partition("explanation_embeddings", pl.DataFrame({
        "feature": ids, "embedding_model": ["all-MiniLM-L6-v2"] * N,
        "embedding": pl.Series(ragged, dtype=pl.List(pl.Float32))}), MODEL, SPARSE)


def map_labels() -> list[str | None]:
    return [PWN_IMG if f == 1 else f"Explained {f}" if f < N - 2 else None for f in range(N)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("feature_page")
    lake = write_lake(str(base / "lake"))
    hostile_feature_1(lake)
    sparse_partition(lake)
    export_layer(base / "exports", LAYER, n=N, model=MODEL, labels=map_labels())
    server, url = serve_in_thread(base / "exports", lake_root=str(base / "lake"))
    try:
        yield url
    finally:
        server.shutdown()


def deep_link(url: str, feature: int, layer: int = LAYER) -> str:
    return f"{url}/?model={MODEL}&layer={layer}&feature={feature}"


def wait_for_feature(page: Any, feature: int, state: str = "ready") -> None:
    page.wait_for_selector(f"#feature[data-feature='{feature}'][data-state='{state}']", timeout=WAIT_MS)


def section(name: str) -> str:
    return f"#feature .fp-section[data-section='{name}']"


def texts(page: Any, selector: str) -> list[str]:
    return page.locator(selector).all_text_contents()


def link_features(page: Any, name: str) -> list[int]:
    return [int(f) for f in page.eval_on_selector_all(f"{section(name)} a.feature-link",
                                                      "els => els.map(e => e.dataset.feature)")]


def errors_besides_404(page: Any) -> list[str]:
    return [e for e in page.errors if not e.startswith(NOT_FOUND)]


def test_deep_link_opens_every_section(page: Any, site: str) -> None:
    expected = requests.get(f"{site}/api/feature", params={"model": MODEL, "layer": LAYER, "feature": 4},
                            timeout=30).json()["sections"]
    page.goto(deep_link(site, 4))
    wait_for_feature(page, 4)
    assert page.is_visible("#feature")
    assert page.text_content("#feature-title") == "Feature 4"
    assert page.text_content("#feature-label") == "Explained 4"  # the best-scoring candidate
    assert page.text_content("#feature-where") == f"{MODEL} · layer {LAYER} of {N} features"
    statuses = page.eval_on_selector_all("#feature .fp-section", "els => els.map(e => [e.dataset.section, "
                                                                 "e.dataset.status])")
    assert sorted(map(tuple, statuses)) == sorted((name, "ok") for name in SECTIONS)

    # labels: the chosen one with source and score, the candidates with theirs, the explanations
    assert page.text_content(f"{section('labels')} .chosen") == "Explained 4 — source explanation, score 0.9"
    assert [texts(page, f"{section('labels')} .candidates tr:nth-child({i}) td") for i in (2, 3, 4)] == [
        ["LLM label", "label 4", "0.75"], ["keyword label", "kw4", "n/a"],
        ["Neuronpedia explanation", "Explained 4", "0.9"]]
    assert texts(page, f"{section('labels')} .candidates tr.winner td:first-child") == ["Neuronpedia explanation"]
    assert texts(page, f"{section('labels')} .explanations li") == ["Explained 4 (oai, gpt, neuronpedia)"]
    facts = dict(zip(texts(page, f"{section('stats')} dt"), texts(page, f"{section('stats')} dd"), strict=True))
    assert facts == {"density": "0.004", "max activation": "4", "mean activation": "1.5", "entropy": "2",
                     "documents": "8", "tokens active": "40"}

    # histogram: one bar per bin, each count in its tooltip
    bars = page.eval_on_selector_all(f"{section('histogram')} .bar", "els => els.map(e => e.title)")
    assert len(bars) == len(expected["histogram"]["counts"]) == 20
    assert sum(int(title.rsplit(": ", 1)[1]) for title in bars) == expected["histogram"]["n_values"] == 13

    # examples: 3 top, 2 quantile bins x 2, 2 random; tokens shaded where active, the peak outlined
    examples = expected["examples"]
    rows = [*examples["top"], *(e for q in examples["quantiles"] for e in q["examples"]), *examples["random"]]
    assert page.locator(f"{section('examples')} .example").count() == len(rows) == 9
    assert page.locator(f"{section('examples')} .tok").count() == sum(len(e["tokens"]) for e in rows) == 42
    assert page.locator(f"{section('examples')} .tok.on").count() == \
        sum(a > 0 for e in rows for a in e["token_activations"]) == 16
    assert page.locator(f"{section('examples')} .tok.peak").count() == 9
    peak = page.locator(f"{section('examples')} .example").first.locator(".tok.peak")
    assert peak.text_content() == "t4.2" and peak.get_attribute("title") == "activation 5"
    assert peak.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 120, 0)"  # 5 / 5: opaque
    half = page.locator(f"{section('examples')} .example").first.locator(".tok").nth(1)  # activation 1 of 5
    assert half.evaluate("e => getComputedStyle(e).backgroundColor") == "rgba(255, 120, 0, 0.2)"
    assert page.locator(f"{section('examples')} .example").last.locator(".tok.on").count() == 0  # random: zeros

    # logit effects, the three neighbour lists, SFAL, cluster, prompts
    assert texts(page, f"{section('logit_effects')} .promoted li") == [f"{SCRIPT} 2.5", " up 1"]
    assert texts(page, f"{section('logit_effects')} .suppressed li") == [" down -1.5"]
    assert texts(page, f"{section('decoder_neighbours')} li") == ["#5 Explained 5 cos 0.9", "#6 Explained 6 cos 0.5"]
    partners = expected["cooccurring"]["partners"]
    assert 0 < len(partners) <= 10 and link_features(page, "cooccurring") == [p["feature"] for p in partners]
    semantic = expected["semantic_neighbours"]["neighbours"]
    assert len(semantic) == 10 and link_features(page, "semantic_neighbours") == [n["feature"] for n in semantic]
    assert texts(page, f"{section('alignment')} tr td:nth-child(2)") == ["0.5", f"{4 / (N - 1):.4g}"]
    assert dict(zip(texts(page, f"{section('cluster')} dt"), texts(page, f"{section('cluster')} dd"), strict=True)) \
        == {"cluster": "0", "kept": "yes", "selected": "yes"}
    prompts = texts(page, f"{section('optimized_prompts')} .prompt .detail")
    assert prompts == ["continuous: activation 2 = 0.2 × dataset max 10; cross-entropy 9",
                       "discrete: activation 8 = 0.8 × dataset max 10; cross-entropy 5"]
    assert texts(page, f"{section('optimized_prompts')} .prompt:nth-child(2) .tok") == ["<bos>", SCRIPT]

    # the map behind follows: feature 4 selected there
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    assert page.text_content("#selected-title") == "feature 4"
    screenshot(page, "feature-page.png")
    page.set_viewport_size({"width": 1280, "height": 2400})  # the whole page in one picture
    screenshot(page, "feature-page-full.png")
    assert page.errors == []


def test_links_open_pages_and_history_walks_them(page: Any, site: str) -> None:
    page.goto(deep_link(site, 4))
    wait_for_feature(page, 4)
    partner = link_features(page, "cooccurring")[0]
    page.locator(f"{section('cooccurring')} a.feature-link").first.click()
    wait_for_feature(page, partner)
    assert page.url.endswith(f"feature={partner}") and page.text_content("#feature-title") == f"Feature {partner}"
    neighbour = link_features(page, "decoder_neighbours")[0]
    assert neighbour == partner + 1  # the fixture's edges: f -> f+1 first
    page.locator(f"{section('decoder_neighbours')} a.feature-link").first.click()
    wait_for_feature(page, neighbour)
    page.go_back()
    wait_for_feature(page, partner)
    page.go_back()
    wait_for_feature(page, 4)
    assert page.url.endswith("feature=4")
    page.go_forward()
    wait_for_feature(page, partner)
    page.click("#feature-close")  # back to the map: the URL loses the feature
    assert page.is_hidden("#feature") and "feature=" not in page.url
    page.go_back()
    wait_for_feature(page, partner)
    assert page.errors == []


def test_search_finds_a_feature_by_label_and_opens_it(page: Any, site: str) -> None:
    page.goto(f"{site}/?model={MODEL}")
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    assert page.is_hidden("#feature")
    page.fill("#search", "KW7")  # a keyword label: only the lake knows it, the map's labels are explanations
    page.wait_for_selector("#results[data-source='lake']", timeout=WAIT_MS)
    assert texts(page, "#results li") == ["#7 Explained 7"] and page.is_visible("#results-box")
    page.click("#results li a")
    wait_for_feature(page, 7)
    assert page.url.endswith("feature=7") and page.text_content("#feature-label") == "Explained 7"
    assert page.is_hidden("#results-box") and page.text_content("#selected-title") == "feature 7"
    page.fill("#search", "12")  # an index
    page.wait_for_selector("#results[data-source='lake']", timeout=WAIT_MS)
    assert texts(page, "#results li") == ["#12 Explained 12"]
    page.fill("#search", "explained 2")
    page.wait_for_selector("#results[data-source='lake']", timeout=WAIT_MS)
    assert texts(page, "#results li") == ["#2 Explained 2", "#20 Explained 20", "#21 Explained 21"]
    screenshot(page, "feature-page-search.png")
    page.click("#results li:nth-child(2) a")
    wait_for_feature(page, 20)
    assert page.errors == []


def test_map_click_opens_the_page(page: Any, site: str) -> None:
    """The click goes through plotly's event API (``gd.emit('plotly_click')``, as test_viewer.py does): picking a
    point of the WebGL scene by mouse position is not reproducible under SwiftShader."""
    page.goto(f"{site}/?model={MODEL}")
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    index = page.evaluate("saeViewer.state.byId.get(9)")
    page.evaluate("([gd, i]) => gd.emit('plotly_click', {points: [{curveNumber: 0, customdata: i}]})",
                  [page.query_selector("#plot"), index])
    wait_for_feature(page, 9)
    assert page.url.endswith(f"?model={MODEL.replace('@', '%40')}&layer={LAYER}&feature=9")
    assert page.text_content("#feature-title") == "Feature 9" and page.text_content("#selected-title") == "feature 9"
    page.go_back()
    assert page.is_hidden("#feature")
    assert page.errors == []


def test_html_in_labels_tokens_and_prompts_is_text(page: Any, site: str) -> None:
    page.goto(deep_link(site, 1))
    wait_for_feature(page, 1)
    assert page.text_content("#feature-label") == PWN_IMG
    assert page.text_content(f"{section('labels')} .chosen strong") == PWN_IMG
    assert texts(page, f"{section('labels')} .candidates td:nth-child(2)") == [PWN_SCRIPT, PWN_SCRIPT, PWN_IMG]
    assert texts(page, f"{section('labels')} .explanations li > span:first-child") == [PWN_IMG]
    first = page.locator(f"{section('examples')} .example").first
    assert first.locator(".tok").all_text_contents() == [PWN_SCRIPT, PWN_IMG, "c", "d", "e"]
    assert texts(page, f"{section('logit_effects')} .promoted .tok")[0] == PWN_IMG
    assert texts(page, f"{section('optimized_prompts')} .tok") == [PWN_IMG]
    assert page.get_by_text(PWN_SCRIPT, exact=True).first.is_visible()
    assert page.get_by_text(PWN_IMG, exact=True).first.is_visible()
    page.fill("#search", "onerror")
    page.wait_for_selector("#results[data-source='lake']", timeout=WAIT_MS)
    assert texts(page, "#results li") == [f"#1 {PWN_IMG}"]
    screenshot(page, "feature-page-html-as-text.png")
    page.goto(deep_link(site, 0))  # a neighbour's label in a link
    wait_for_feature(page, 0)
    assert texts(page, f"{section('decoder_neighbours')} a")[0] == f"#1 {PWN_IMG}"
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0 and page.locator("body script").count() == 0
    assert page.errors == []


def test_missing_tables_name_the_asset_to_materialize(page: Any, site: str) -> None:
    page.goto(deep_link(site, 2, layer=SPARSE))
    wait_for_feature(page, 2)
    where = f"for {MODEL} layer {SPARSE}"
    missing = {"examples": "activation_examples", "histogram": "activation_examples", "logit_effects": "logit_effects",
               "decoder_neighbours": "feature_map", "cooccurring": "cooccurrence", "alignment": "alignment_scores",
               "cluster": "feature_clusters", "optimized_prompts": "optimized_prompts"}
    for name, asset in missing.items():
        assert page.get_attribute(section(name), "data-status") == "missing", name
        assert page.text_content(f"{section(name)} .status.missing") == f"materialize {asset} {where}", name
    assert page.text_content(f"{section('labels')} .status.missing") == f"materialize explanations {where}"
    assert page.get_attribute(section("labels"), "data-status") == "ok"
    assert page.get_attribute(section("stats"), "data-status") == "ok"
    assert page.get_attribute(section("semantic_neighbours"), "data-status") == "error"  # ragged embeddings
    assert page.text_content(f"{section('semantic_neighbours')} .status.error").startswith("error: ")
    screenshot(page, "feature-page-missing.png")

    page.goto(deep_link(site, N - 1))  # no label, explanation, edges, prompts for the last feature
    wait_for_feature(page, N - 1)
    assert page.text_content("#feature-label") == "(no label)"
    for name in ("labels", "decoder_neighbours", "semantic_neighbours", "optimized_prompts"):
        assert page.get_attribute(section(name), "data-status") == "none", name
        assert page.text_content(f"{section(name)} .status.none").startswith("no rows for this feature"), name

    page.goto(deep_link(site, N))  # past the SAE's width: the API's 404 message
    wait_for_feature(page, N, state="error")
    assert "out of range" in page.text_content("#feature-status")
    assert page.text_content("#feature-title") == f"Feature {N}"
    assert errors_besides_404(page) == [] and len(page.errors) == 1
