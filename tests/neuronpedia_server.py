"""A Neuronpedia-shaped server on 127.0.0.1: S3 ListObjectsV2 (paged), gzipped JSONL batches, the API.

It records the path and headers of every request (``received``), can answer chosen paths with a 302
to another URL (``redirects``), and echoes a wrong x-api-key in its 401 body, as careless servers do."""

from __future__ import annotations

import gzip
import json
import threading
import time
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
