"""A small HTTP server for the viewer: the page, plotly.js from the ``plotly`` wheel, and the exports.

Routes (GET only):
  ``/``                          the page (``static/index.html``)
  ``/static/<name>``             the page's own files
  ``/vendor/plotly.min.js``      plotly.js as bundled in the installed ``plotly`` package (no CDN)
  ``/data/models.json``          ``{"models": [...]}``: directories of the exports root holding a manifest.json
  ``/data/<model>/<file>``       ``manifest.json`` and ``layer-N.json`` / ``layer-N.json.gz`` (served with
                                 ``Content-Encoding: gzip``: the browser decompresses)
Nothing else under the exports root is served, and names are matched, never joined blindly, so a request
cannot leave the root.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from sae_assets.core.feature_map.layout import LAYER_FILE, MANIFEST

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json"}


def plotly_js() -> Path:
    """Path of ``plotly.min.js`` inside the installed ``plotly`` package; FileNotFoundError when absent."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed (pip install plotly): it carries plotly.js")
    path = Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed plotly package")
    return path


def list_models(root: Path) -> list[str]:
    """Model directories of the exports root that hold a manifest, sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def resolve_data(root: Path, model: str, name: str) -> Path | None:
    """The file ``root/model/name`` when ``model`` is one of the exports' models and ``name`` is a manifest
    or layer file of it; None otherwise."""
    if model not in list_models(root) or not (name == MANIFEST or LAYER_FILE.match(name)):
        return None
    path = root / model / name
    return path if path.is_file() else None


class ViewerHandler(BaseHTTPRequestHandler):
    """Serves the viewer; ``exports`` is the feature-map exports root (``<files>/exports/feature_map``)."""

    server_version = "sae-assets-viewer"

    def __init__(self, *args: Any, exports: Path, **kwargs: Any) -> None:
        self.exports = exports
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self._file(STATIC / "index.html")
        if parts[0] == "static" and len(parts) == 2 and (STATIC / parts[1]).is_file() and parts[1] != "..":
            return self._file(STATIC / parts[1])
        if parts == ["vendor", "plotly.min.js"]:
            try:
                return self._file(plotly_js())
            except FileNotFoundError as err:
                return self.send_error(HTTPStatus.NOT_FOUND, str(err))
        if parts == ["data", "models.json"]:
            return self._bytes(json.dumps({"models": list_models(self.exports)}).encode(), ".json")
        if parts[0] == "data" and len(parts) == 3:
            found = resolve_data(self.exports, parts[1], parts[2])
            if found is not None:
                return self._file(found)
        self.send_error(HTTPStatus.NOT_FOUND, "not found")

    def _file(self, path: Path) -> None:
        gzipped = path.name.endswith(".json.gz")
        self._bytes(path.read_bytes(), ".json" if gzipped else path.suffix, gzipped)

    def _bytes(self, data: bytes, suffix: str, gzipped: bool = False) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(suffix, "application/octet-stream"))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # Only the page's own and the vendored scripts run (no inline script): a label that reached the DOM as
        # HTML still could not run one. plotly.js's WebGL code (regl) compiles functions: 'unsafe-eval'.
        self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-eval'; "
                         "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; worker-src blob:")
        self.end_headers()
        self.wfile.write(data)


def make_server(exports: Path | str, host: str = "127.0.0.1", port: int = 8050) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free port; read ``server.server_address``)."""
    handler = partial(ViewerHandler, exports=Path(exports).expanduser().resolve())
    return ThreadingHTTPServer((host, port), handler)


def serve_in_thread(exports: Path | str, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a daemon thread; returns it (``shutdown()`` to stop) and its base URL."""
    server = make_server(exports, host, port)
    threading.Thread(target=server.serve_forever, daemon=True, name="sae-assets-viewer").start()
    bound_host, bound_port = cast(str, server.server_address[0]), server.server_address[1]  # AF_INET: str
    return server, f"http://{bound_host}:{bound_port}"
