"""The feature-map viewer: its server's routes, and the page in real headless Chromium."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from sae_assets.core.common.atomic_file import stage_file
from sae_assets.core.feature_map.knn import exact_knn
from sae_assets.core.feature_map.layout import (
    commit_layer,
    edges_frame,
    encode,
    layer_entry,
    layer_file_name,
    layer_json,
    nodes_frame,
    write_manifest,
)
from sae_assets.viewer.server import serve_in_thread
from tests.browser import browser_page, free_port, screenshot, serving

MODEL = "smollm2-135m@demo-res"
N = 40
SCRIPT = "<script>window.__pwned = 1</script> commas"
IMG = '<img src=x onerror="window.__pwned = 2"> greater than'


def _labels() -> list[str | None]:
    labels: list[str | None] = [f"topic {i % 5} feature {i}" for i in range(N)]
    labels[3], labels[7], labels[11] = SCRIPT, IMG, None
    return labels


def export_layer(root: Path, layer: int, n: int = N, gzip_file: bool = False, seed: int = 0, model: str = MODEL,
                 labels: list[str | None] | None = None) -> dict:
    """Write ``root/<model>/layer-N.json[.gz]`` and the manifest as the feature_map asset does (features 0..n-1,
    ``labels`` or :func:`_labels`); the payload."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    indices, sims = (t.numpy() for t in exact_knn(vectors, 4))
    density = rng.uniform(1e-4, 1e-1, size=n)
    nodes = nodes_frame(np.arange(n), rng.normal(size=(n, 3)).astype(np.float32), (labels or _labels())[:n],
                        density.tolist(), [i % 3 - 1 for i in range(n)])
    payload = layer_json(nodes, edges_frame(indices, sims, 4, -1.0), 4, model=model, layer=layer)
    directory = root / model
    directory.mkdir(parents=True, exist_ok=True)
    path = commit_layer(stage_file(directory / layer_file_name(layer, gzip_file), encode(payload, gzip_file)))
    write_manifest(directory, model, [layer_entry(path, payload)])
    return payload


@pytest.fixture
def exports(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "feature_map"
    payload = export_layer(root, 2)
    export_layer(root, 4, n=25, gzip_file=True, seed=1)
    return root, payload


def test_routes_serve_page_plotly_and_exports_only(exports: tuple[Path, dict]) -> None:
    root, payload = exports
    (root / "secret.txt").write_text("not served")
    server, url = serve_in_thread(root)
    try:
        page = requests.get(url + "/", timeout=5)
        assert page.ok and "/vendor/plotly.min.js" in page.text
        assert "script-src 'self' 'unsafe-eval'" in page.headers["Content-Security-Policy"]
        plotly = requests.get(url + "/vendor/plotly.min.js", timeout=5)
        assert plotly.ok and len(plotly.content) > 1_000_000
        assert plotly.headers["Content-Type"].startswith("text/javascript")
        assert requests.get(url + "/data/models.json", timeout=5).json() == {"models": [MODEL]}
        manifest = requests.get(f"{url}/data/{MODEL}/manifest.json", timeout=5).json()
        assert [(e["layer"], e["file"]) for e in manifest["layers"]] == [(2, "layer-2.json"), (4, "layer-4.json.gz")]
        assert requests.get(f"{url}/data/{MODEL}/layer-2.json", timeout=5).json() == payload
        gz = requests.get(f"{url}/data/{MODEL}/layer-4.json.gz", timeout=5)  # requests decodes Content-Encoding
        assert gz.headers["Content-Encoding"] == "gzip" and len(gz.json()["nodes"]) == 25
        raw = gzip.decompress((root / MODEL / "layer-4.json.gz").read_bytes())
        assert json.loads(raw) == gz.json()
        for bad in ("/data/secret.txt", f"/data/{MODEL}/../secret.txt", "/data/..%2Fsecret.txt/x",
                    "/static/..%2F..%2Fserver.py", "/data/nope/manifest.json", f"/data/{MODEL}/layer-9.json"):
            assert requests.get(url + bad, timeout=5).status_code == 404, bad
    finally:
        server.shutdown()


def test_page_draws_hovers_searches_and_shows_neighbours(exports: tuple[Path, dict], tmp_path: Path) -> None:
    root, payload = exports
    port = free_port()
    lake = tmp_path / "empty-lake"  # no tables: the feature page and the lake's search answer 404
    with serving(["-m", "sae_assets.viewer", "--exports", str(root), "--port", str(port), "--lake", str(lake)],
                 f"http://127.0.0.1:{port}/data/models.json", log_name="viewer.log"), browser_page() as page:
        page.goto(f"http://127.0.0.1:{port}/?model={MODEL}")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        assert page.text_content("#status").startswith(f"{N} features, {len(payload['edges'])} edges")
        assert page.evaluate("document.getElementById('plot').data[0].x.length") == N
        assert page.evaluate("document.getElementById('plot')._fullData[0].type") == "scatter3d"
        assert page.locator("#plot canvas").count() > 0  # WebGL drew the scene
        assert page.eval_on_selector("#layer", "el => [...el.options].map(o => o.value)") == ["2", "4"]

        # hover: plotly's own hover event for point 3, whose label is a <script> tag: shown as text
        page.evaluate("gd => gd.emit('plotly_hover', {points: [{curveNumber: 0, customdata: 3}], "
                      "event: {clientX: 200, clientY: 200}})", page.query_selector("#plot"))
        assert page.is_visible("#tooltip") and page.text_content("#tooltip") == f"#3 {SCRIPT}"
        page.evaluate("gd => gd.emit('plotly_hover', {points: [{curveNumber: 0, customdata: 7}]})",
                      page.query_selector("#plot"))
        assert page.text_content("#tooltip") == f"#7 {IMG}"

        # search by label text: matches listed (as text) and drawn as the highlight trace
        page.fill("#search", "topic 2")
        expected = [i for i, lab in enumerate(_labels()) if lab and "topic 2" in lab]
        assert page.get_attribute("#results", "data-count") == str(len(expected))
        assert page.locator("#results li").all_text_contents() == [f"#{i} {_labels()[i]}" for i in expected]
        assert page.evaluate("document.getElementById('plot').data[1].customdata") == expected
        page.fill("#search", "onerror")
        assert page.locator("#results li").all_text_contents() == [f"#7 {IMG}"]

        # click: the feature's neighbours, most similar first, and the lines to them; its page opens (the lake
        # has no table: the page says so; test_feature_page.py shows pages from a full lake)
        page.evaluate("gd => gd.emit('plotly_click', {points: [{curveNumber: 0, customdata: 3}]})",
                      page.query_selector("#plot"))
        edges = sorted((e for e in payload["edges"] if e["source"] == 3), key=lambda e: (-e["similarity"], e["target"]))
        items = page.locator("#neighbours li").all_text_contents()
        assert len(items) == len(edges) == 4 and items[0].startswith(f"#{edges[0]['target']} ")
        assert page.text_content("#selected-label") == SCRIPT
        assert page.evaluate("document.getElementById('plot').data[2].x.length") == 3 * len(edges)
        page.wait_for_selector("#feature[data-feature='3'][data-state='error']", timeout=30_000)
        assert "materialize its assets first" in page.text_content("#feature-status")
        page.click("#feature-close")
        page.locator("#neighbours li").first.click()  # neighbours are clickable: that feature is selected
        assert page.text_content("#selected-title") == f"feature {edges[0]['target']}"
        page.wait_for_selector(f"#feature[data-feature='{edges[0]['target']}'][data-state='error']", timeout=30_000)
        page.click("#feature-close")

        # the labels never became markup
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img").count() == 0 and page.locator("body script").count() == 0
        page.select_option("#colour", "cluster")
        page.select_option("#layer", "4")
        page.wait_for_selector("body[data-layer='4']", timeout=30_000)
        assert page.evaluate("document.getElementById('plot').data[0].x.length") == 25
        assert page.text_content("#status").startswith("25 features")
        assert page.text_content("#selected-title") == "click a point" and page.locator("#neighbours li").count() == 0
        screenshot(page, "viewer.png")
        # the only console errors: the browser's notes on the API's 404s (no lake partition)
        assert [e for e in page.errors if "status of 404" not in e] == []
