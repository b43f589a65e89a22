"""The SAE page (/sae?model=&layer=) in real headless Chromium: the eval card with its flagged CE loss score, the
density histogram, label quality, SFAL, feature links that open feature pages, the links to it from the map and
from a feature page, a partition without sae_evals or labels, an unknown partition, and labels shown as text.

The lake is test_sae_data's (feature 16's label made hostile); the exports hold MODEL layer LAYER's map.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import polars as pl
import pytest
import requests

from sae_assets.viewer.sae_data import SAE_SECTIONS
from sae_assets.viewer.server import serve_in_thread
from tests.browser import screenshot
from tests.viewer.test_feature_data import LAYER, MODEL, N
from tests.viewer.test_feature_page import PWN_IMG, WAIT_MS, errors_besides_404, map_labels, wait_for_feature
from tests.viewer.test_sae_data import PARTIAL, labels_frame, write_sae_lake
from tests.viewer.test_viewer import export_layer

HOSTILE = 16  # among the densest and the best-labelled features


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("sae_page")
    lake = write_sae_lake(str(base / "lake"))
    lake.write_partition("feature_labels", labels_frame().with_columns(
        pl.when(pl.col("feature") == HOSTILE).then(pl.lit(PWN_IMG)).otherwise(pl.col("label")).alias("label")),
        MODEL, LAYER)
    export_layer(base / "exports", LAYER, n=N, model=MODEL, labels=map_labels())
    server, url = serve_in_thread(base / "exports", lake_root=str(base / "lake"))
    try:
        yield url
    finally:
        server.shutdown()


def sae_url(site: str, layer: int = LAYER) -> str:
    return f"{site}/sae?{urlencode({'model': MODEL, 'layer': layer})}"


def wait_for_sae(page: Any, state: str = "ready") -> None:
    page.wait_for_selector(f"#sae[data-state='{state}']", timeout=WAIT_MS)


def section(name: str) -> str:
    return f"#sae .fp-section[data-section='{name}']"


def texts(page: Any, selector: str) -> list[str]:
    return page.locator(selector).all_text_contents()


def link_features(page: Any, name: str) -> list[int]:
    return [int(f) for f in page.eval_on_selector_all(f"{section(name)} a.feature-link",
                                                      "els => els.map(e => e.dataset.feature)")]


def test_card_histogram_labels_sfal_and_feature_lists(page: Any, site: str) -> None:
    expected = requests.get(f"{site}/api/sae", params={"model": MODEL, "layer": LAYER}, timeout=30).json()
    page.goto(sae_url(site))
    wait_for_sae(page)
    assert page.text_content("#sae-title") == f"SAE of {MODEL} · layer {LAYER}"
    assert page.text_content("#sae-where") == f"{N} features"
    statuses = page.eval_on_selector_all("#sae .fp-section",
                                         "els => els.map(e => [e.dataset.section, e.dataset.status])")
    assert sorted(map(tuple, statuses)) == sorted((name, "ok") for name in SAE_SECTIONS)

    # the card: the verdict, the headline tiles, the negative CE loss score highlighted
    assert page.text_content(f"{section('evals')} .verdict") == expected["sections"]["evals"]["verdict"]
    tiles = page.eval_on_selector_all(f"{section('evals')} .tile", "els => els.map(e => e.dataset.metric)")
    assert tiles == ["ce_loss_score", "delta_lm_loss", "kl_div_score", "explained_variance", "l0", "dead_fraction",
                     "dense_fraction"]
    values = texts(page, f"{section('evals')} .tile-value")
    assert values == ["-0.25", "+1 nats", "0.87", "0.8", "12.5", f"{100 / N:.4g}%", "0%"]
    ce = page.locator(f"{section('evals')} .tile.ce")
    assert "negative" in ce.get_attribute("class")
    assert ce.locator(".tile-flag").text_content() == "worse than zeroing the hook: a broken or mismatched SAE"
    assert ce.evaluate("e => getComputedStyle(e).borderColor") == "rgb(176, 0, 32)"
    assert "p90 17" in texts(page, f"{section('evals')} .tile[data-metric='l0'] .detail")[0]
    facts = dict(zip(texts(page, f"{section('evals')} dt"), texts(page, f"{section('evals')} dd"), strict=True))
    assert facts["hook"] == "blocks.3.hook_resid_post" and facts["CE hook zeroed"] == "10"
    assert facts["contexts"] == "8 × 128 tokens"

    # the histogram: one bar per bin, its count in data-count and its title; the dense threshold drawn
    counts = expected["sections"]["density"]["counts"]
    bars = page.eval_on_selector_all(f"{section('density')} svg rect.bar", "els => els.map(e => "
                                     "[Number(e.dataset.count), e.querySelector('title').textContent])")
    assert [c for c, _ in bars] == counts and len(bars) == 32 and sum(counts) == N - 1
    assert all(title.endswith(f": {c} latents") for c, title in bars)
    heights = page.eval_on_selector_all(f"{section('density')} svg rect.bar", "els => els.map(e => e.getBBox().height)")
    assert max(heights) > 50 and heights[counts.index(0)] == 0
    assert page.locator(f"{section('density')} svg line.dense").count() == 1
    assert texts(page, f"{section('density')} svg .tick-label")[:2] == ["1e-8", "1e-7"]
    assert page.text_content(f"{section('density')} p.detail") == \
        f"{N - 1} live latents by density; dead latents (never active, 1) are not drawn"

    # label quality and SFAL
    rows = [texts(page, f"{section('labels')} tr[data-source='{s}'] td") for s in ("explanation", "llm", "keywords")]
    assert [r[:2] for r in rows] == [["explanation", "6"], ["llm", "7"], ["keywords", "7"]]
    assert rows[1][3] == f"0.6 ({N - 4})" and rows[2][3] == "n/a (0)"
    assert texts(page, f"{section('alignment')} tr[data-model='b-model'] td") == [
        "b-model", f"{10.5 / (N - 1):.4g}", f"{10.5 / (N - 1):.4g}", f"{N - 2} of {N}", "0.5"]
    assert "features with an explanation" in page.text_content(f"{section('alignment')} p.detail")

    # the feature lists: links to feature pages, labels as text
    assert link_features(page, "densest") == list(range(N - 1, N - 11, -1))
    assert link_features(page, "rarest") == list(range(1, 11))
    assert link_features(page, "best_labelled")[:3] == [17, HOSTILE, 15]
    assert texts(page, f"{section('best_labelled')} li")[1] == f"#{HOSTILE} {PWN_IMG} keywords 0.16"
    assert page.locator("img").count() == 0 and page.evaluate("window.__pwned") is None
    screenshot(page, "sae-page.png")
    page.set_viewport_size({"width": 1280, "height": 1800})
    screenshot(page, "sae-page-full.png")
    assert page.errors == []


def test_a_feature_link_opens_its_page(page: Any, site: str) -> None:
    page.goto(sae_url(site))
    wait_for_sae(page)
    page.locator(f"{section('densest')} a.feature-link").first.click()
    wait_for_feature(page, N - 1)
    assert page.url.endswith(f"&layer={LAYER}&feature={N - 1}") and page.url.split("?")[0].endswith("/")
    assert page.text_content("#feature-title") == f"Feature {N - 1}"
    page.go_back()
    wait_for_sae(page)
    page.locator(f"{section('best_labelled')} a.feature-link").nth(1).click()
    wait_for_feature(page, HOSTILE)
    assert page.text_content("#feature-label") == PWN_IMG
    assert page.errors == []


def test_the_map_and_a_feature_page_link_here(page: Any, site: str) -> None:
    page.goto(f"{site}/?model={MODEL}")
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    link = page.locator("#sae-link")
    assert link.is_visible() and link.text_content() == "SAE page ›"
    assert link.get_attribute("href") == "/sae?" + urlencode({"model": MODEL, "layer": LAYER})
    link.click()
    wait_for_sae(page)
    assert page.url == sae_url(site)
    page.click("#sae-map")  # and back to the map of this layer
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    assert page.url.endswith("/?" + urlencode({"model": MODEL, "layer": LAYER}))

    page.goto(f"{site}/?{urlencode({'model': MODEL, 'layer': LAYER, 'feature': 4})}")
    wait_for_feature(page, 4)
    assert page.text_content("#feature-where") == f"{MODEL} · layer {LAYER} of {N} features"
    page.click("#feature-sae")
    wait_for_sae(page)
    assert page.url == sae_url(site) and page.text_content("#sae-title") == f"SAE of {MODEL} · layer {LAYER}"
    assert page.errors == []


def test_missing_tables_and_unknown_partitions(page: Any, site: str) -> None:
    page.goto(sae_url(site, PARTIAL))
    wait_for_sae(page)
    where = f"for {MODEL} layer {PARTIAL}"
    missing = {"evals": "sae_evals", "density": "sae_evals", "labels": "feature_labels",
               "alignment": "alignment_scores", "best_labelled": "feature_labels"}
    for name, asset in missing.items():
        assert page.get_attribute(section(name), "data-status") == "missing", name
        assert page.text_content(f"{section(name)} .status.missing") == f"materialize {asset} {where}", name
    assert link_features(page, "densest")[0] == N - 1 and page.get_attribute(section("rarest"), "data-status") == "ok"
    screenshot(page, "sae-page-missing.png")
    assert page.errors == []

    page.goto(sae_url(site, PARTIAL + 5))  # no table holds it: the API's 404 message
    wait_for_sae(page, "error")
    assert "materialize its assets first" in page.text_content("#sae-status")
    page.goto(f"{site}/sae")
    wait_for_sae(page, "error")
    assert page.text_content("#sae-status") == "open /sae?model=<model key>&layer=<layer>"
    assert errors_besides_404(page) == [] and len(page.errors) == 1
