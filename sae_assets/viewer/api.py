"""The feature and SAE pages' JSON API, read from the lake on demand (mounted at ``/api`` when the app has a lake
root).

Routes (GET and HEAD; every answer is ``application/json``):
  ``/api/feature?model=&layer=&feature=``   :meth:`FeatureReader.page`: every section the lake has for the feature
  ``/api/search?model=&layer=&q=``          :meth:`FeatureReader.search`: the first 20 features whose label or
                                            explanation contains ``q`` (case-insensitive), or feature ``q`` itself
  ``/api/sae?model=&layer=``                :meth:`SaeReader.page`: the SAE page (evals, density histogram, label
                                            quality, SFAL NDCG, densest / rarest / best-labelled features)
A model key must match the catalog's pattern, layer and feature must be non-negative integers: otherwise 400
``{"error": ...}``. A model × layer that no table holds (for ``/api/sae``: sae_evals included), or a feature past
the SAE's width: 404 ``{"error": ...}``.
Labels, tokens and texts are returned verbatim as JSON strings: the page shows them as text, never as HTML.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router

from sae_assets.catalog.entries import MODEL_KEY_PATTERN
from sae_assets.viewer.feature_data import FeatureReader, NotFound
from sae_assets.viewer.sae_data import SaeReader

log = logging.getLogger(__name__)
INDEX = re.compile(r"[0-9]{1,9}")
MAX_MODEL_KEY = 200
MAX_QUERY = 200


class BadRequest(ValueError):
    """A parameter is missing or malformed (400)."""


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if value is None or value == "":
        raise BadRequest(f"missing parameter {name!r}")
    return value


def model_param(request: Request) -> str:
    value = _param(request, "model")
    if len(value) > MAX_MODEL_KEY or not MODEL_KEY_PATTERN.fullmatch(value):
        raise BadRequest("model must be a catalog model key '<model>@<sae-family>' (letters, digits, '.', '_', '-')")
    return value


def index_param(request: Request, name: str) -> int:
    value = _param(request, name)
    if not INDEX.fullmatch(value):
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(value)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class FeatureApi:
    """The API's handlers over one :class:`FeatureReader` (sync: Starlette runs them on its thread pool)."""

    def __init__(self, reader: FeatureReader) -> None:
        self.reader = reader
        self.sae_reader = SaeReader(reader)

    def _answer(self, request: Request, read: Any) -> JSONResponse:
        try:
            return JSONResponse(read())
        except BadRequest as err:
            return _error(400, str(err))
        except NotFound as err:
            return _error(404, str(err))

    def feature(self, request: Request) -> JSONResponse:
        return self._answer(request, lambda: self.reader.page(
            model_param(request), index_param(request, "layer"), index_param(request, "feature")))

    def sae(self, request: Request) -> JSONResponse:
        return self._answer(request, lambda: self.sae_reader.page(model_param(request), index_param(request, "layer")))

    def search(self, request: Request) -> JSONResponse:
        def read() -> dict[str, Any]:
            model, layer = model_param(request), index_param(request, "layer")
            query = request.query_params.get("q", "")
            if len(query) > MAX_QUERY:
                raise BadRequest(f"q is longer than {MAX_QUERY} characters")
            return self.reader.search(model, layer, query)

        return self._answer(request, read)

    def router(self) -> Router:
        return Router([Route("/feature", self.feature, methods=["GET"]),
                       Route("/search", self.search, methods=["GET"]),
                       Route("/sae", self.sae, methods=["GET"])], redirect_slashes=False)
