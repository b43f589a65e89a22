from __future__ import annotations

import requests

from sae_assets.resources.http_credentials import OriginScopedSession, origin, redact


def _hop(session: OriginScopedSession, start: str, to: str) -> requests.PreparedRequest:
    """The request requests would send after ``start`` answered a redirect to ``to``."""
    first = session.prepare_request(requests.Request("GET", start))
    answer = requests.Response()
    answer.request = first
    nxt = first.copy()
    nxt.prepare_url(to, None)
    session.rebuild_auth(nxt, answer)
    return nxt


def test_origin_fills_default_ports_and_ignores_case_and_path() -> None:
    assert origin("https://API.example.org/v1?x=1") == origin("https://api.example.org:443/other")
    assert origin("http://api.example.org") == ("http", "api.example.org", 80)
    assert origin("http://api.example.org") != origin("https://api.example.org")
    assert origin("http://127.0.0.1:8000/v1") != origin("http://127.0.0.1:8001/v1")


def test_credential_only_on_its_origin_across_hops() -> None:
    session = OriginScopedSession("http://api.example.org/v1", "Authorization", "tok", prefix="Bearer ")
    assert session.prepare_request(requests.Request("GET", "http://api.example.org/v1/x")).headers[
        "Authorization"] == "Bearer tok"
    assert "Authorization" not in session.prepare_request(requests.Request("GET", "http://other.org/")).headers
    # requests itself keeps Authorization on an http -> https hop of the same host; this session does not
    assert "Authorization" not in _hop(session, "http://api.example.org/v1/x", "https://api.example.org/v1/x").headers
    assert _hop(session, "http://api.example.org/a", "http://api.example.org:80/b").headers[
        "Authorization"] == "Bearer tok"
    assert "Authorization" not in session.headers and "tok" not in repr(session)


def test_custom_header_is_dropped_on_a_hop_to_another_host() -> None:
    session = OriginScopedSession("https://www.example.org", "x-api-key", "k-123")
    assert "x-api-key" not in _hop(session, "https://www.example.org/api", "https://evil.example.net/api").headers
    plain = OriginScopedSession("https://www.example.org")
    assert "x-api-key" not in plain.prepare_request(requests.Request("GET", "https://www.example.org/")).headers


def test_redact_hides_secrets_and_url_userinfo() -> None:
    assert redact("GET https://u:pw@h.org/x said key-1 twice: key-1", "key-1", None) == (
        "GET https://***@h.org/x said *** twice: ***")
