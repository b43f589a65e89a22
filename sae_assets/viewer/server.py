"""The viewer's server: a Starlette app (the page, plotly.js from the ``plotly`` wheel, the exports) run by uvicorn.

Routes (GET and HEAD; another method on a route is 405, any other path 404):
  ``/``                          the page (``static/index.html``): the map, and ``?model=&layer=&feature=`` a
                                 feature's page over it
  ``/sae``                       the SAE page (``static/sae.html``), ``?model=&layer=``: one SAE's evals, density
                                 histogram, label quality, SFAL NDCG and feature lists (from ``/api/sae``)
  ``/static/<name>``             the page's own files
  ``/vendor/plotly.min.js``      plotly.js as bundled in the installed ``plotly`` package (no CDN)
  ``/data/models.json``          ``{"models": [...]}``: directories of the exports root holding a manifest.json
  ``/data/<model>/<file>``       ``manifest.json`` and ``layer-N.json`` / ``layer-N.json.gz`` (served with
                                 ``Content-Encoding: gzip``: the browser decompresses)
  ``/api/feature``, ``/api/search``, ``/api/sae``  the pages' JSON, read from the lake
                                 (:mod:`sae_assets.viewer.api`; only when the app is given a lake root)
Path parameters are matched by converters (a model key as the catalog spells it, a manifest or layer file name,
no ``/``), then looked up: the model must be one :func:`list_models` lists and the file, symlinks followed, must
lie inside the root. Nothing else under the exports root is served, and a request cannot leave the root.
Every response carries the security headers (a Content-Security-Policy allowing only the page's own scripts).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sae_assets.catalog.entries import MODEL_KEY_PATTERN
from sae_assets.core.feature_map.export_names import LAYER_FILE, MANIFEST
from sae_assets.viewer.api import FeatureApi
from sae_assets.viewer.feature_data import FeatureReader

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json"}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Only the page's own and the vendored scripts run (no inline script): a label that reached the DOM as HTML
    # still could not run one. plotly.js's WebGL code (regl) compiles functions: 'unsafe-eval'.
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; worker-src blob:",
}


def _unanchored(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


class _Pattern(Convertor[str]):
    """A path segment matching ``regex`` (never a ``/``), passed on as it is."""

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class ModelKey(_Pattern):
    regex = _unanchored(MODEL_KEY_PATTERN.pattern)  # "<model>@<sae set>", as the catalog's keys


class DataFile(_Pattern):
    regex = f"{MANIFEST.replace('.', '[.]')}|{_unanchored(LAYER_FILE.pattern)}"


class StaticName(_Pattern):
    regex = r"[A-Za-z0-9][A-Za-z0-9._\-]*"  # one file name, not hidden, not ".."


register_url_convertor("viewer_model", ModelKey())
register_url_convertor("viewer_data_file", DataFile())
register_url_convertor("viewer_static", StaticName())


def plotly_js() -> Path:
    """Path of ``plotly.min.js`` inside the installed ``plotly`` package; FileNotFoundError when absent."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed (pip install plotly): it carries plotly.js")
    path = Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed plotly package")
    return path


def file_inside(root: Path, path: Path) -> Path | None:
    """``path`` resolved (symlinks followed) when it is a regular file inside the resolved ``root``; else None."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop
        return None
    return resolved if resolved.is_relative_to(root.resolve()) and resolved.is_file() else None


def list_models(root: Path) -> list[str]:
    """Model directories of the exports root that hold a manifest (inside the root), sorted."""
    root = root.resolve()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if MODEL_KEY_PATTERN.match(p.name) and file_inside(root, p / MANIFEST) is not None)


def resolve_data(root: Path, model: str, name: str) -> Path | None:
    """The file ``root/model/name`` (resolved) when ``model`` is one of the exports' models and ``name`` is a
    manifest or layer file of it inside the root; None otherwise."""
    if model not in list_models(root) or not (name == MANIFEST or LAYER_FILE.match(name)):
        return None
    return file_inside(root, root / model / name)


def _file(path: Path) -> FileResponse:
    gzipped = path.name.endswith(".json.gz")
    media_type = CONTENT_TYPES.get(".json" if gzipped else path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Content-Encoding": "gzip"} if gzipped else None)


def _not_found(detail: str = "Not Found") -> HTTPException:
    return HTTPException(404, detail)


def index(request: Request) -> FileResponse:
    return _file(STATIC / "index.html")


def sae_page(request: Request) -> FileResponse:
    return _file(STATIC / "sae.html")


def static(request: Request) -> FileResponse:
    found = file_inside(STATIC, STATIC / request.path_params["name"])
    if found is None:
        raise _not_found()
    return _file(found)


def vendor_plotly(request: Request) -> FileResponse:
    try:
        return _file(plotly_js())
    except FileNotFoundError as err:
        raise _not_found(str(err)) from err


def models(request: Request) -> JSONResponse:
    return JSONResponse({"models": list_models(request.app.state.exports)})


def data(request: Request) -> FileResponse:
    found = resolve_data(request.app.state.exports, request.path_params["model"], request.path_params["name"])
    if found is None:
        raise _not_found()
    return _file(found)


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every response (those a route set itself are kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def build_app(exports: Path, lake_root: str | None = None,
              storage_options: dict[str, str] | None = None) -> Starlette:
    """The viewer's ASGI app over the feature-map exports root (``<files>/exports/feature_map``); with a lake root
    (a path or a deltalake URI), also the pages' API under ``/api``."""
    data_routes = Router([Route("/models.json", models, methods=["GET"]),
                          Route("/{model:viewer_model}/{name:viewer_data_file}", data, methods=["GET"])],
                         redirect_slashes=False)
    routes = [Route("/", index, methods=["GET"]), Route("/sae", sae_page, methods=["GET"]),
              Route("/static/{name:viewer_static}", static, methods=["GET"]),
              Route("/vendor/plotly.min.js", vendor_plotly, methods=["GET"]), Mount("/data", app=data_routes)]
    reader = FeatureReader(lake_root, storage_options) if lake_root is not None else None
    if reader is not None:
        routes.append(Mount("/api", app=FeatureApi(reader).router()))
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.router.redirect_slashes = False  # "/data/models.json/" is not found, not redirected
    app.state.exports = Path(exports).expanduser().resolve()
    app.state.reader = reader
    return app


class ViewerServer:
    """The app under uvicorn on a socket bound at construction (port 0: a free one; :attr:`url` says which).

    :meth:`run` serves in this thread until SIGINT/SIGTERM (the CLI); :meth:`start` on a daemon thread until
    :meth:`shutdown` (tests, notebooks), as does ``with ViewerServer(...).start():``.
    """

    def __init__(self, exports: Path | str, host: str = "127.0.0.1", port: int = 8050,
                 lake_root: str | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.app = build_app(Path(exports), lake_root)
        # log_config=None: uvicorn's loggers propagate to the caller's logging setup; no access log (as before).
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on",
                                headers=[("server", "sae-assets-viewer")], timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def run(self) -> None:
        """Serve in this thread until a signal (or :meth:`shutdown` from another thread)."""
        self.server.run(sockets=[self.socket])

    def start(self, timeout_s: float = 30.0) -> ViewerServer:
        """Serve on a daemon thread; returns once the server accepts connections."""
        self.thread = threading.Thread(target=self.run, daemon=True, name="sae-assets-viewer")
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.shutdown()
                raise RuntimeError(f"the viewer server did not start at {self.url} (see the uvicorn log)")
            time.sleep(0.02)
        return self

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread; open connections are closed (forcibly after ``timeout_s``)."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout_s)
            if self.thread.is_alive():
                log.warning("viewer server still running after %.0f s: forcing exit", timeout_s)
                self.server.force_exit = True
                self.thread.join(timeout_s)
        self.socket.close()

    def __enter__(self) -> ViewerServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def make_server(exports: Path | str, host: str = "127.0.0.1", port: int = 8050,
                lake_root: str | None = None) -> ViewerServer:
    """A server bound to ``host:port`` (port 0: any free port; read ``server.url``); not yet serving."""
    return ViewerServer(exports, host, port, lake_root)


def serve_in_thread(exports: Path | str, host: str = "127.0.0.1", port: int = 0,
                    lake_root: str | None = None) -> tuple[ViewerServer, str]:
    """Start a server on a daemon thread; returns it (``shutdown()`` to stop) and its base URL."""
    server = make_server(exports, host, port, lake_root).start()
    return server, server.url
