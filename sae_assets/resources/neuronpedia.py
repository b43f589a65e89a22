"""Neuronpedia: bulk explanation exports on S3, and the API for a short list of features.

Exports live at ``{s3_url}/v1/{modelId}/{sourceId}/explanations/batch-{n}.jsonl.gz``; the prefix is
listed with S3's ListObjectsV2 (``?list-type=2&prefix=...``, paged by continuation token). One HTTP
session serves the exports and another the API, with timeouts and retries with exponential backoff on
429, 5xx and connection errors. The API key goes only to the API's origin: never to S3, never along a
redirect to another origin, and never into a log line or an error message. Batches are streamed and
gunzipped line by line; a truncated or corrupt batch raises :class:`NeuronpediaError`, so a caller that
collects everything before writing writes nothing partial.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import requests
from pydantic import Field

from sae_assets.resources.http_credentials import OriginScopedSession

log = logging.getLogger(__name__)

DEFAULT_S3_URL = "https://neuronpedia-datasets.s3.us-east-1.amazonaws.com"
DEFAULT_API_URL = "https://www.neuronpedia.org"
RETRY_STATUS = {429, 500, 502, 503, 504}
_BATCH = re.compile(r"batch-(\d+)\.jsonl\.gz$")
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class NeuronpediaError(RuntimeError):
    """An export or API request failed for good; the message names the URL."""


class NeuronpediaClient:
    """Holds the export session (no credential) and the API session (``x-api-key`` for the API's origin only)."""

    def __init__(self, s3_url: str, api_url: str, api_key: str | None, timeout_s: float, retries: int,
                 backoff_s: float) -> None:
        self.s3_url, self.api_url = s3_url.rstrip("/"), api_url.rstrip("/")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.s3 = OriginScopedSession(self.s3_url)
        self.api = OriginScopedSession(self.api_url, "x-api-key", api_key)

    def _get(self, session: OriginScopedSession, url: str, params: dict[str, str] | None = None,
             stream: bool = False) -> requests.Response:
        error, safe_url = "", self.api.redact(url)
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = session.get(url, params=params, timeout=self.timeout_s, stream=stream)
            except requests.RequestException as err:
                error = self.api.redact(f"{type(err).__name__}: {err}")
                log.info("GET %s failed (%s); attempt %d of %d", safe_url, error, attempt + 1, self.retries + 1)
                continue
            if resp.status_code in RETRY_STATUS:
                error = f"HTTP {resp.status_code}"
                resp.close()
                log.info("GET %s answered %s; attempt %d of %d", safe_url, error, attempt + 1, self.retries + 1)
                continue
            if resp.status_code != 200:
                body = self.api.redact(resp.text[:200])
                resp.close()
                raise NeuronpediaError(f"GET {safe_url} answered HTTP {resp.status_code}: {body}")
            return resp
        raise NeuronpediaError(f"GET {safe_url} failed after {self.retries + 1} attempts: {error}")

    def export_prefix(self, model_id: str, source_id: str) -> str:
        return f"v1/{model_id}/{source_id}/explanations/"

    def list_explanation_batches(self, model_id: str, source_id: str) -> list[str]:
        """Keys of the export batches, ordered by batch number."""
        prefix, token, keys = self.export_prefix(model_id, source_id), None, []
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            resp = self._get(self.s3, self.s3_url + "/", params)
            try:
                root = ET.fromstring(resp.content)
            except ET.ParseError as err:
                raise NeuronpediaError(f"S3 listing of {prefix} is not XML: {err}") from err
            keys += [el.text or "" for el in root.iter(f"{_S3_NS}Key")] or [el.text or "" for el in root.iter("Key")]
            truncated = (root.findtext(f"{_S3_NS}IsTruncated") or root.findtext("IsTruncated") or "false") == "true"
            token = root.findtext(f"{_S3_NS}NextContinuationToken") or root.findtext("NextContinuationToken")
            if not truncated or not token:
                break
        numbered = {k: int(m.group(1)) for k in keys if (m := _BATCH.search(k))}
        return sorted(numbered, key=numbered.__getitem__)

    def iter_batch(self, key: str, on_bad_line: Callable[[int, str], None] | None = None
                   ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) of one gzipped JSONL batch, streamed. A line that is not a JSON object (not UTF-8,
        not JSON, or another JSON value) raises :class:`NeuronpediaError`, or, given ``on_bad_line``, is passed to
        it as (line number, what is wrong) and skipped. A truncated or corrupt gzip stream always raises."""
        url = f"{self.s3_url}/{key}"
        resp = self._get(self.s3, url, stream=True)
        try:
            with gzip.GzipFile(fileobj=resp.raw) as gz:
                for number, raw in enumerate(gz, start=1):
                    if not raw.strip():
                        continue
                    try:
                        record = json.loads(raw.decode("utf-8"))
                        problem = None if isinstance(record, dict) else "is not a JSON object"
                    except UnicodeDecodeError as err:
                        problem = f"is not UTF-8 text ({err.reason} at byte {err.start})"
                    except json.JSONDecodeError as err:
                        problem = f"is not JSON: {err}"
                    if problem is None:
                        yield number, record
                    elif on_bad_line is None:
                        raise NeuronpediaError(f"{key} line {number} {problem}")
                    else:
                        on_bad_line(number, problem)
        except (EOFError, OSError, zlib.error) as err:
            raise NeuronpediaError(f"{key} is truncated or not gzip ({type(err).__name__}: {err})") from err
        finally:
            resp.close()

    def feature(self, model_id: str, source_id: str, index: int) -> dict[str, Any]:
        """One feature from the API (``/api/feature/{modelId}/{sourceId}/{index}``)."""
        resp = self._get(self.api, f"{self.api_url}/api/feature/{model_id}/{source_id}/{index}")
        try:
            return resp.json()
        except ValueError as err:
            raise NeuronpediaError(f"API answer for {model_id}/{source_id}/{index} is not JSON") from err


class NeuronpediaResource(dg.ConfigurableResource):
    """Neuronpedia's S3 exports and API (``NEURONPEDIA_S3_URL``, ``NEURONPEDIA_API_URL``, ``NEURONPEDIA_API_KEY``)."""

    s3_url: str = Field(default=DEFAULT_S3_URL, description="Base URL of the public datasets bucket.")
    api_url: str = Field(default=DEFAULT_API_URL, description="Base URL of the Neuronpedia API.")
    api_key: str | None = Field(default=None, repr=False,
                                description="Sent as x-api-key to the API's origin only (use EnvVar).")
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 1.0

    def client(self) -> NeuronpediaClient:
        return NeuronpediaClient(self.s3_url, self.api_url, self.api_key, self.timeout_s, self.retries,
                                 self.backoff_s)
