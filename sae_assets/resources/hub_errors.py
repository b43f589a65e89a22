"""What a failed Hugging Face hub download means, for the error messages of the SAE and language-model loaders.

SAELens, transformers and huggingface_hub each report a hub failure their own way (huggingface_hub's error classes,
``requests`` errors from SAELens's range requests, transformers' ``OSError`` wrapping either), often with the cause
chained. :func:`classify_hub_error` walks the chain and names the failure; :func:`hub_endpoint` is the hub the
clients talk to (``HF_ENDPOINT``, default https://huggingface.co).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

HubFailureKind = Literal["offline", "unreachable", "repo", "file", "access", "other"]


@dataclass(frozen=True)
class HubFailure:
    kind: HubFailureKind
    """offline: HF_HUB_OFFLINE is set and the file is not cached; unreachable: no answer from the hub (connection
    refused, timeout, DNS); repo: the hub has no such repo; file: the repo has no such file (or revision); access:
    the repo is gated or private for this token; other: anything else."""
    url: str | None = None
    """The URL the failed request asked for, when the error carries it."""

    @property
    def path(self) -> str | None:
        """The file's path inside its repo (what follows ``/resolve/<revision>/``), when the URL is a file's."""
        if self.url is None:
            return None
        _, sep, rest = urlparse(self.url).path.partition("/resolve/")
        return (rest.partition("/")[2] or None) if sep else None


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [err]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _response(err: BaseException) -> tuple[int | None, str | None, str | None]:
    """(status, X-Error-Code, URL) of the HTTP response an error carries (``requests``' or huggingface_hub's)."""
    response = getattr(err, "response", None)
    if response is None:
        request = getattr(err, "request", None)
        url = getattr(request, "url", None)
        return None, None, str(url) if url is not None else None
    headers = getattr(response, "headers", None) or {}
    url = getattr(response, "url", None)
    return getattr(response, "status_code", None), headers.get("X-Error-Code"), str(url) if url else None


def classify_hub_error(err: BaseException) -> HubFailure:
    """The hub failure behind ``err`` (searching its causes), most specific first: an HTTP answer from the hub
    (a missing repo or file, no access) wins over a connection failure met on the way."""
    import requests
    from huggingface_hub import errors

    chain = list(_chain(err))
    for e in chain:
        status, code, url = _response(e)
        if isinstance(e, errors.GatedRepoError) or code == "GatedRepo" or status in (401, 403):
            return HubFailure("access", url)
        if isinstance(e, errors.RepositoryNotFoundError) or code == "RepoNotFound":
            return HubFailure("repo", url)
        if (isinstance(e, (errors.RemoteEntryNotFoundError, errors.RevisionNotFoundError))
                or code in ("EntryNotFound", "RevisionNotFound") or status == 404):
            return HubFailure("file", url)
    if hub_offline():
        return HubFailure("offline")
    network = (requests.ConnectionError, requests.Timeout, errors.LocalEntryNotFoundError, ConnectionError,
               TimeoutError)
    for e in chain:
        status, _, url = _response(e)
        if status is None and (isinstance(e, network)
                               or type(e).__module__.startswith(("httpx", "httpcore", "urllib3"))):
            return HubFailure("unreachable", url)
    return HubFailure("other")
