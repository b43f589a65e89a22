"""A Neuronpedia-shaped server on 127.0.0.1: S3 ListObjectsV2 (paged), gzipped JSONL batches, the API.

It records the path and headers of every request (``received``), can answer chosen paths with a 302
to another URL (``redirects``), and echoes a wrong x-api-key in its 401 body, as careless servers do.
:func:`source_export` builds what it serves for one Neuronpedia source in Neuronpedia's own layout;
:data:`GEMMA_3_270M` is such a source: Gemma Scope 2's layer-12 residual SAE of Gemma 3 270M."""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class NeuronpediaServer:
    def __init__(self, batches: dict[str, list[dict] | bytes], page_size: int = 2, api_key: str | None = None,
                 faults: dict[str, list[int]] | None = None, features: dict[str, dict] | None = None,
                 redirects: dict[str, str] | None = None) -> None:
        """``batches``: key -> records (gzipped here) or raw bytes; ``faults``: path -> statuses to answer
        before the real one (e.g. [429] then success); status 0 stalls for 1 s first (a timeout);
        ``redirects``: path -> URL answered with a 302 to it."""
        self.files = {k: v if isinstance(v, bytes) else gzip.compress(
            "\n".join(json.dumps(r) for r in v).encode()) for k, v in batches.items()}
        self.page_size, self.api_key = page_size, api_key
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.features, self.redirects = features or {}, redirects or {}
        self.hits: list[str] = []
        self.received: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                outer.hits.append(url.path)
                outer.received.append((url.path, {k.lower(): v for k, v in self.headers.items()}))
                if url.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[url.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                fault = outer.faults.get(url.path)
                if fault:
                    status = fault.pop(0)
                    if status == 0:
                        time.sleep(1.0)
                    else:
                        return self._send(status, b"fault")
                if url.path == "/":
                    return self._list(parse_qs(url.query))
                if url.path.startswith("/api/feature/"):
                    sent = self.headers.get("x-api-key")
                    if outer.api_key and sent != outer.api_key:
                        return self._send(401, f"unauthorized: wrong key {sent}".encode())
                    key = url.path.removeprefix("/api/feature/")
                    if key not in outer.features:
                        return self._send(404, b"not found")
                    return self._send(200, json.dumps(outer.features[key]).encode(), "application/json")
                body = outer.files.get(url.path.lstrip("/"))
                return self._send(200, body) if body is not None else self._send(404, b"no such key")

            def _list(self, query: dict) -> None:
                prefix = query.get("prefix", [""])[0]
                keys = sorted(k for k in outer.files if k.startswith(prefix))
                start = int(query.get("continuation-token", ["0"])[0])
                page = keys[start : start + outer.page_size]
                more = start + outer.page_size < len(keys)
                contents = "".join(f"<Contents><Key>{k}</Key><Size>{len(outer.files[k])}</Size></Contents>"
                                   for k in page)
                token = f"<NextContinuationToken>{start + outer.page_size}</NextContinuationToken>" if more else ""
                xml = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}"><Prefix>{prefix}'
                       f"</Prefix><KeyCount>{len(page)}</KeyCount><IsTruncated>{str(more).lower()}</IsTruncated>"
                       f"{contents}{token}</ListBucketResult>")
                self._send(200, xml.encode(), "application/xml")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def __enter__(self) -> NeuronpediaServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


EXPORT_BATCH = 1024
"""Explanations per export batch (``FEATURES_EXPLANATIONS_BATCH_SIZE`` of Neuronpedia's ``export-data.py``)."""


@dataclass(frozen=True)
class NeuronpediaSource:
    """One Neuronpedia source (an SAE): its ids, and the explanations it holds as
    ``feature index -> [(description, explainer model), ...]``."""

    model_id: str
    source_id: str
    explanations: dict[int, list[tuple[str, str]]]

    def records(self) -> list[dict]:
        """The explanation rows as Neuronpedia's exporter writes them (the columns of its ``Explanation`` table,
        ``index`` text, ``layer`` the source id), in its order: ``ORDER BY index`` on that text, so 10 before 2."""
        rows = [{"id": f"np-{self.source_id}-{index}-{n}", "modelId": self.model_id, "layer": self.source_id,
                 "index": str(index), "authorId": "default-creator", "description": description,
                 "embedding": None, "typeName": "oai_token-act-pair", "explanationModelName": model,
                 "umap_x": None, "umap_y": None, "umap_cluster": None, "umap_log_feature_sparsity": None}
                for index, found in self.explanations.items() for n, (description, model) in enumerate(found)]
        return sorted(rows, key=lambda r: r["index"])

    def api_features(self) -> dict[str, dict]:
        """``{modelId}/{sourceId}/{index}`` -> the API's feature JSON (its explanations with ``createdAt``)."""
        by_index: dict[str, list[dict]] = {}
        for row in self.records():
            by_index.setdefault(row["index"], []).append({**row, "createdAt": "2025-12-19T00:00:00.000Z"})
        return {f"{self.model_id}/{self.source_id}/{index}": {
            "modelId": self.model_id, "layer": self.source_id, "index": index, "explanations": found}
            for index, found in by_index.items()}


def source_export(source: NeuronpediaSource, batch_size: int = EXPORT_BATCH) -> dict[str, list[dict] | bytes]:
    """The source's S3 keys (``v1/{modelId}/{sourceId}/``) as Neuronpedia publishes them: the explanations in
    ``explanations/batch-{n}.jsonl.gz``, ``batch_size`` rows each, beside ``source.jsonl`` (plain JSONL) and the
    features' own batches (``features/batch-0.jsonl.gz``), which an explanations reader lists past."""
    base, rows = f"v1/{source.model_id}/{source.source_id}/", source.records()
    files: dict[str, list[dict] | bytes] = {f"{base}explanations/batch-{n}.jsonl.gz": rows[start:start + batch_size]
                                            for n, start in enumerate(range(0, len(rows), batch_size))}
    files[f"{base}source.jsonl"] = json.dumps({"id": source.source_id, "modelId": source.model_id,
                                               "hasDashboards": True, "visibility": "PUBLIC"}).encode() + b"\n"
    files[f"{base}features/batch-0.jsonl.gz"] = [{"modelId": source.model_id, "layer": source.source_id,
                                                  "index": str(index)} for index in sorted(source.explanations)]
    return files


GEMMA_3_270M = NeuronpediaSource("gemma-3-270m", "12-gemmascope-2-res-16k", {
    0: [("references to time of day", "gpt-4o-mini")],
    2: [("the word 'the' after a preposition", "gpt-4o-mini")],
    10: [("closing parentheses in code", "gpt-4o-mini"), ("code: closing brackets", "claude-4-5-haiku")],
    511: [("French words inside English text", "gpt-4o-mini")],
    16383: [("numbers in dates", "gpt-4o-mini")],
})
"""Made-up explanations of five features of ``gemma-3-270m/12-gemmascope-2-res-16k`` (layer 12 of the catalog's
``gemma-3-270m@gemmascope-2-res-16k``), the last the 16k SAE's last feature; feature 10 has two explainers."""
