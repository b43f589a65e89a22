"""The viewer's Starlette app through its TestClient (routes, 404/405, traversal and symlink refusals, security
headers, gzip layers) and its uvicorn server on a thread (raw request targets, HEAD, clean shutdown)."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sae_assets.viewer.server import SECURITY_HEADERS, build_app, list_models, make_server, serve_in_thread
from tests.viewer.test_viewer import MODEL, export_layer

SECRET = "top secret, outside the exports"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An exports root with MODEL's layer 2 (json) and 4 (gzip), and a secret next to (outside) it."""
    root = tmp_path / "exports"
    export_layer(root, 2, n=12)
    export_layer(root, 4, n=10, gzip_file=True, seed=1)
    (root / "secret.txt").write_text(SECRET)
    (root / MODEL / "notes.txt").write_text(SECRET)
    (tmp_path / "passwd").write_text(SECRET)
    (root / "not-a-model-key").mkdir()  # a manifest under a name that is no catalog key: not a model
    (root / "not-a-model-key" / "manifest.json").write_text('{"layers": []}')
    return root


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    with TestClient(build_app(root)) as client:
        yield client


def assert_security_headers(headers: Mapping[str, str]) -> None:
    for key, value in SECURITY_HEADERS.items():
        assert headers[key] == value, key


def test_routes_content_types_and_security_headers(client: TestClient) -> None:
    js, json_type = "text/javascript; charset=utf-8", "application/json"
    expected = {"/": "text/html; charset=utf-8", "/static/viewer.js": js, "/static/feature_page.js": js,
                "/vendor/plotly.min.js": js, "/static/viewer.css": "text/css; charset=utf-8",
                "/data/models.json": json_type,
                f"/data/{MODEL}/manifest.json": json_type, f"/data/{MODEL}/layer-2.json": json_type}
    for path, content_type in expected.items():
        response = client.get(path)
        assert response.status_code == 200 and response.headers["Content-Type"] == content_type, path
        assert int(response.headers["Content-Length"]) == len(response.content) > 0, path
        assert_security_headers(response.headers)
    assert "script-src 'self' 'unsafe-eval'" in client.get("/").headers["Content-Security-Policy"]
    assert "/vendor/plotly.min.js" in client.get("/").text
    assert client.get("/data/models.json").json() == {"models": [MODEL]}
    manifest = client.get(f"/data/{MODEL}/manifest.json").json()
    assert [(e["layer"], e["file"]) for e in manifest["layers"]] == [(2, "layer-2.json"), (4, "layer-4.json.gz")]
    # errors carry the headers too
    assert_security_headers(client.get("/nope").headers)
    assert_security_headers(client.post("/data/models.json").headers)


def test_gzip_layer_is_served_as_stored_with_content_encoding(client: TestClient, root: Path) -> None:
    stored = (root / MODEL / "layer-4.json.gz").read_bytes()
    with client.stream("GET", f"/data/{MODEL}/layer-4.json.gz") as response:
        raw = b"".join(response.iter_raw())
        assert response.status_code == 200 and response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"] == "application/json"
    assert raw == stored and int(response.headers["Content-Length"]) == len(stored)
    decoded = client.get(f"/data/{MODEL}/layer-4.json.gz").json()  # httpx decodes as a browser does
    assert decoded == json.loads(gzip.decompress(stored)) and len(decoded["nodes"]) == 10
    assert "Content-Encoding" not in client.get(f"/data/{MODEL}/layer-2.json").headers


@pytest.mark.parametrize("path", [
    "/nope", "/index.html", "/static", "/static/", "/static/nope.js", "/static/.hidden", "/vendor/other.js",
    "/data", "/data/", "/data/models.json/", "/data/secret.txt", "/data/nope@x/manifest.json",
    f"/data/{MODEL}", f"/data/{MODEL}/", f"/data/{MODEL}/layer-9.json", f"/data/{MODEL}/layer-2.json.gz",
    f"/data/{MODEL}/notes.txt", f"/data/{MODEL}/layer-2.json/x", "/data/not-a-model-key/manifest.json",
])
def test_anything_else_is_not_found(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and response.headers["Content-Type"].startswith("text/plain"), path


TRAVERSALS = [
    "/data/%2e%2e/%2e%2e/etc/passwd", "/data/..%2Fsecret.txt/x", "/data/..%2F..%2Fpasswd/manifest.json",
    f"/data/{MODEL}/..%2Fsecret.txt", f"/data/{MODEL}/%2e%2e%2F%2e%2e%2Fpasswd", f"/data/{MODEL}%2F..%2F..%2Fpasswd/x",
    "/static/..%2Fserver.py", "/static/%2e%2e%2F%2e%2e%2Fserver.py", "/static/%2Fetc%2Fpasswd", "/static//etc/passwd",
    "/data//etc/passwd", "/data/%2Fetc%2Fpasswd/manifest.json", "/vendor/..%2Fstatic/viewer.js",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_encoded_traversal_and_absolute_paths_are_refused(client: TestClient, path: str) -> None:
    response = client.get(path)  # the TestClient decodes %2e/%2F into the path the router sees, as uvicorn does
    assert response.status_code == 404 and SECRET not in response.text, path


def test_symlinks_leaving_the_root_are_refused(client: TestClient, root: Path, tmp_path: Path) -> None:
    export_layer(tmp_path / "elsewhere", 3, n=5)  # a model with a manifest, outside the root
    (root / "outside@model").symlink_to(tmp_path / "elsewhere" / MODEL, target_is_directory=True)
    (root / MODEL / "layer-7.json").symlink_to(tmp_path / "passwd")
    (root / MODEL / "layer-8.json").symlink_to(root / MODEL / "layer-2.json")  # inside: fine
    (root / MODEL / "layer-6.json").symlink_to(root / MODEL / "loop.json")
    (root / MODEL / "loop.json").symlink_to(root / MODEL / "layer-6.json")
    assert list_models(root) == [MODEL] and client.get("/data/models.json").json() == {"models": [MODEL]}
    assert client.get("/data/outside@model/manifest.json").status_code == 404
    assert client.get(f"/data/{MODEL}/layer-7.json").status_code == 404
    assert client.get(f"/data/{MODEL}/layer-6.json").status_code == 404
    assert client.get(f"/data/{MODEL}/layer-8.json").json() == client.get(f"/data/{MODEL}/layer-2.json").json()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(client: TestClient, method: str) -> None:
    for path in ("/", "/data/models.json", f"/data/{MODEL}/manifest.json", "/static/viewer.js"):
        response = client.request(method, path)
        assert response.status_code == 405 and set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}, path
    head = client.head(f"/data/{MODEL}/layer-2.json")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) > 0


def _raw(url_host: tuple[str, int], method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """A request whose target is sent exactly as written (no client-side normalisation of ``..``)."""
    connection = http.client.HTTPConnection(*url_host, timeout=10)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_uvicorn_server_on_a_thread_refuses_raw_traversal_and_shuts_down(root: Path) -> None:
    server, url = serve_in_thread(root)
    address = server.address
    assert url == f"http://127.0.0.1:{address[1]}" and address[1] > 0
    try:
        status, headers, body = _raw(address, "GET", "/data/models.json")
        assert status == 200 and json.loads(body) == {"models": [MODEL]}
        assert headers["server"] == "sae-assets-viewer" and headers["content-security-policy"]
        for target in ["/data/../secret.txt", "/data/../../passwd", f"/data/{MODEL}/../secret.txt",
                       f"/data/{MODEL}/../../passwd", "/static/../server.py", "/static/../../viewer/server.py",
                       "/../../passwd", *TRAVERSALS]:
            status, headers, body = _raw(address, "GET", target)
            assert status == 404 and SECRET.encode() not in body, target
            assert headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"], target
        status, headers, body = _raw(address, "HEAD", f"/data/{MODEL}/layer-4.json.gz")
        assert status == 200 and body == b"" and headers["content-encoding"] == "gzip"
        assert _raw(address, "POST", "/data/models.json")[0] == 405
        keep_alive = http.client.HTTPConnection(*address, timeout=10)  # an idle connection does not hold shutdown
        keep_alive.request("GET", "/data/models.json")
        keep_alive.getresponse().read()
    finally:
        server.shutdown()
    keep_alive.close()
    assert server.thread is not None and not server.thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "sae-assets-viewer"]
    with pytest.raises(OSError), socket.create_connection(address, timeout=2):
        pass


def test_make_server_binds_first_and_serves_as_a_context_manager(root: Path) -> None:
    server = make_server(root, port=0)
    assert server.address[0] == "127.0.0.1" and not server.server.started
    with server.start():
        assert _raw(server.address, "GET", f"/data/{MODEL}/layer-2.json")[0] == 200
    assert server.thread is not None and not server.thread.is_alive()
    with make_server(root, port=0).start() as busy, pytest.raises(OSError):  # the port is taken: the bind fails
        make_server(root, port=busy.address[1])
