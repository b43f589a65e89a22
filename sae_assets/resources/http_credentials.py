"""HTTP sessions whose credential goes only to its own origin, and redaction of secrets from messages.

A credential header set on a plain ``requests.Session`` goes with every request the session sends and
follows redirects to other hosts (requests strips ``Authorization`` across hosts, never custom headers
like ``x-api-key``, and keeps ``Authorization`` on an http -> https hop). :class:`OriginScopedSession`
instead adds its credential to a request, and to each redirect hop, only when that URL's origin
(scheme, host, port) is the configured one, and drops it everywhere else.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests

MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}
REDACTED = "***"
_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a malformed port: an origin nothing matches
        return scheme, "", -1
    return scheme, (parts.hostname or "").lower(), port if port is not None else DEFAULT_PORTS.get(scheme)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced by ``***``, and user:password@ in URLs too."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _USERINFO.sub(REDACTED + "@", text)


class OriginScopedSession(requests.Session):
    """A session that sends ``header: prefix + secret`` only to ``base_url``'s origin, across redirects too.

    Holds the origin, the header name and the secret (never in ``self.headers``, so it is neither merged
    into requests elsewhere nor shown by anything that prints the session's headers). At most
    ``max_redirects`` redirects are followed.
    """

    def __init__(self, base_url: str, header: str = "", secret: str | None = None, prefix: str = "",
                 max_redirects: int = MAX_REDIRECTS) -> None:
        super().__init__()
        self.origin = origin(base_url)
        self.max_redirects = max_redirects
        self._header, self._secret, self._prefix = header, secret or None, prefix

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return f"OriginScopedSession({scheme}://{host}:{port}, credential={'set' if self._secret else 'none'})"

    def redact(self, text: str) -> str:
        """``text`` without this session's secret (for messages, logs and errors)."""
        return redact(text, self._secret)

    def _scope(self, prepared: requests.PreparedRequest) -> None:
        if not self._secret:
            return
        value = self._prefix + self._secret
        if prepared.headers.get(self._header) == value:
            del prepared.headers[self._header]
        if origin(prepared.url or "") == self.origin:
            prepared.headers[self._header] = value

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        self._scope(prepared)
        return prepared

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        """Called by requests on every redirect hop: drop the credential unless the new URL is our origin."""
        super().rebuild_auth(prepared_request, response)
        self._scope(prepared_request)
