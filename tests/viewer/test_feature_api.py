"""The feature page's JSON API through Starlette's TestClient (and once through uvicorn): parameters validated (400),
unknown partitions and features (404), JSON shapes, search, strings returned verbatim, and the CLI's --lake."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sae_assets.viewer import __main__ as cli
from sae_assets.viewer.feature_data import SECTIONS
from sae_assets.viewer.server import SECURITY_HEADERS, build_app, serve_in_thread
from tests.viewer.test_feature_data import LAYER, MODEL, SCRIPT, N

JSON = "application/json"


@pytest.fixture
def client(lake_dir: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_app(tmp_path / "exports", lake_root=lake_dir)) as client:
        yield client


def _feature(client: TestClient, **params: object):
    return client.get("/api/feature", params={"model": MODEL, "layer": LAYER, "feature": 4, **params})


def test_feature_json_has_every_section_and_the_security_headers(client: TestClient) -> None:
    response = _feature(client)
    assert response.status_code == 200 and response.headers["Content-Type"] == JSON
    for key, value in SECURITY_HEADERS.items():
        assert response.headers[key] == value
    page = response.json()
    assert set(page) == {"model", "layer", "feature", "label", "n_features", "sections"}
    assert (page["model"], page["layer"], page["feature"], page["n_features"]) == (MODEL, LAYER, 4, N)
    assert list(page["sections"]) == list(SECTIONS)
    assert all(section["status"] == "ok" for section in page["sections"].values())
    assert len(page["sections"]["examples"]["top"]) == 3 and len(page["sections"]["cooccurring"]["partners"]) <= 10
    head = client.head("/api/feature", params={"model": MODEL, "layer": LAYER, "feature": 4})
    assert head.status_code == 200 and head.content == b""


def test_strings_holding_html_come_back_verbatim_as_json(client: TestClient) -> None:
    response = _feature(client, feature=1)
    assert response.headers["Content-Type"] == JSON and "script-src 'self'" in response.headers[
        "Content-Security-Policy"]
    sections = response.json()["sections"]
    assert sections["labels"]["label_llm"] == SCRIPT
    assert sections["examples"]["top"][0]["tokens"][0] == SCRIPT
    assert sections["logit_effects"]["promoted"][0]["token"] == SCRIPT
    assert SCRIPT in response.text  # JSON has nothing to escape in it: the page must show it as text
    prompts = _feature(client, feature=4).json()["sections"]["optimized_prompts"]["prompts"]
    assert [p["text"] for p in prompts] == ["<bos> x", f"<bos>{SCRIPT}"]


@pytest.mark.parametrize("params", [
    {"model": None}, {"model": ""}, {"model": "no-at-sign"}, {"model": "a@b/../c"}, {"model": f"{MODEL}\n"},
    {"model": "x@" + "y" * 300}, {"model": "<script>@x"}, {"layer": None}, {"layer": "-1"}, {"layer": "1.5"},
    {"layer": "three"}, {"layer": "9" * 12}, {"feature": None}, {"feature": "-3"}, {"feature": "0x10"},
    {"feature": " 4"}, {"feature": "4;drop"},
])
def test_bad_parameters_are_400_json(client: TestClient, params: dict) -> None:
    query = {"model": MODEL, "layer": str(LAYER), "feature": "4", **params}
    response = client.get("/api/feature", params={k: v for k, v in query.items() if v is not None})
    assert response.status_code == 400 and response.headers["Content-Type"] == JSON
    assert set(response.json()) == {"error"}


def test_unknown_partition_or_feature_is_404_json(client: TestClient) -> None:
    for params in ({"layer": LAYER + 1}, {"model": "other@model"}, {"feature": N}):
        response = _feature(client, **params)
        assert response.status_code == 404 and response.headers["Content-Type"] == JSON, params
        assert response.json()["error"], params
    assert "out of range" in _feature(client, feature=N).json()["error"]
    search = client.get("/api/search", params={"model": MODEL, "layer": LAYER + 1, "q": "x"})
    assert search.status_code == 404 and search.headers["Content-Type"] == JSON


def test_search_by_text_and_index(client: TestClient) -> None:
    def search(q: str) -> dict:
        response = client.get("/api/search", params={"model": MODEL, "layer": LAYER, "q": q})
        assert response.status_code == 200 and response.headers["Content-Type"] == JSON
        return response.json()

    found = search("explained 2")
    assert [r["feature"] for r in found["results"]] == [2, 20, 21] and found["total"] == 3
    assert found["results"][0] == {"feature": 2, "label": "Explained 2"}
    assert search("KW7")["results"] == [{"feature": 7, "label": "Explained 7"}]
    assert search("<script>")["results"] == [{"feature": 1, "label": "Explained 1"}]
    assert search("5")["results"] == [{"feature": 5, "label": "Explained 5"}]  # an integer: that feature
    assert search("e")["truncated"] and len(search("e")["results"]) == 20
    assert search("")["results"] == []
    too_long = client.get("/api/search", params={"model": MODEL, "layer": LAYER, "q": "x" * 201})
    assert too_long.status_code == 400 and "error" in too_long.json()
    assert client.get("/api/search", params={"model": "bad", "layer": LAYER, "q": "x"}).status_code == 400


def test_methods_and_paths_outside_the_api(client: TestClient, tmp_path: Path) -> None:
    assert client.post("/api/feature", params={"model": MODEL, "layer": LAYER, "feature": 4}).status_code == 405
    assert client.get("/api/feature/").status_code == 404 and client.get("/api").status_code == 404
    with TestClient(build_app(tmp_path / "exports")) as without_lake:  # no lake root: no API
        response = without_lake.get("/api/feature", params={"model": MODEL, "layer": LAYER, "feature": 4})
        assert response.status_code == 404 and response.headers["Content-Type"].startswith("text/plain")


def test_api_through_uvicorn(lake_dir: str, tmp_path: Path) -> None:
    server, url = serve_in_thread(tmp_path / "exports", lake_root=lake_dir)
    try:
        with urllib.request.urlopen(f"{url}/api/feature?model={MODEL}&layer={LAYER}&feature=3", timeout=30) as reply:
            assert reply.headers["Content-Type"] == JSON
            assert json.loads(reply.read())["sections"]["stats"]["status"] == "ok"
    finally:
        server.shutdown()


def test_cli_lake_defaults_to_the_platform_lake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAE_ASSETS_LAKE", str(tmp_path / "the-lake"))
    monkeypatch.delenv("SAE_ASSETS_FILES", raising=False)
    assert cli.default_lake() == str(tmp_path / "the-lake")
    assert cli.default_exports(str(tmp_path / "other")) == (tmp_path / "other" / "exports" / "feature_map").resolve()
    monkeypatch.delenv("SAE_ASSETS_LAKE")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.default_lake() == str(tmp_path / "home" / "lake")
    seen: dict = {}

    class Server:  # what main() would serve, without serving
        url = "http://127.0.0.1:1"

        def run(self) -> None:
            pass

        class socket:  # noqa: N801
            @staticmethod
            def close() -> None:
                pass

    def make_server(exports: Path, host: str, port: int, lake_root: str | None = None) -> Server:
        seen.update(exports=exports, lake_root=lake_root)
        return Server()

    monkeypatch.setattr(cli, "make_server", make_server)
    assert cli.main(["--exports", str(tmp_path / "x"), "--lake", str(tmp_path / "lake2")]) == 0
    assert seen == {"exports": (tmp_path / "x").resolve(), "lake_root": str(tmp_path / "lake2")}
    assert cli.main(["--exports", str(tmp_path / "x")]) == 0 and seen["lake_root"] == str(tmp_path / "home" / "lake")
