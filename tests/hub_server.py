"""A Hugging Face hub-shaped server on 127.0.0.1, serving model repos from a local folder (``<root>/<org>/<repo>/``).

It answers what ``huggingface_hub`` (``hf_hub_download``, ``model_info``, ``list_repo_tree``), transformers and
SAELens request, as the hub does:

- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` (a file over
  ``LFS_MIN`` bytes, as the hub stores in LFS: its sha256, also as ``X-Linked-Etag`` with ``X-Linked-Size``; a
  smaller one: its git blob sha1), ``Content-Length`` and ``Accept-Ranges: bytes``; a ``Range: bytes=a-b`` (or
  ``a-``, ``-n``) gets a 206 with ``Content-Range`` (SAELens reads safetensors headers this way), one past the end
  a 416; a missing file a 404 with ``X-Error-Code: EntryNotFound`` (and ``X-Repo-Commit``, which huggingface_hub
  uses to remember the absence), a missing repo ``RepoNotFound``, an unknown revision ``RevisionNotFound``.
- ``GET /api/models/{repo_id}[/revision/{revision}]``: the model info (``sha``, ``siblings``).
- ``GET /api/models/{repo_id}/tree/{revision}[/{path}][?recursive=true]``: the file listing.

A repo's commit is a hash of its files' names, sizes and modification times, so it changes when a file does and a
client's cache never mixes two versions. ``requests`` records (method, path, Range header) of every request.
Point clients at it with :func:`hub_endpoint`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

LFS_MIN = 10 * 1024 * 1024
"""Files at least this large are answered as the hub answers LFS files (sha256 etag, X-Linked-* headers)."""
CHUNK = 1 << 20
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
API_MODEL = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
API_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class HubServer:
    """Serves ``root``'s repos until closed; ``url`` is the endpoint to give clients (``HF_ENDPOINT``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[tuple[str, str, str | None]] = []
        """(method, path with query, Range header) of each request, in arrival order."""
        self._etags: dict[tuple[Path, int, int], str] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):  # noqa: N802
                outer._handle(self, head=True)

            def do_GET(self):  # noqa: N802
                outer._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # -- repos ------------------------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path | None:
        """The folder of ``repo_id`` (``org/name``), or None when the server has no such repo."""
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
            return None
        folder = self.root.joinpath(*parts)
        return folder if folder.is_dir() else None

    @staticmethod
    def files(repo: Path) -> list[str]:
        """The repo's file paths (posix, relative, sorted); hidden files (``.git``, ``.cache``) left out."""
        return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(repo).parts))

    def commit(self, repo: Path) -> str:
        digest = hashlib.sha1()
        for name in self.files(repo):
            stat = (repo / name).stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def etag(self, path: Path) -> str:
        """sha256 of an LFS-sized file, the git blob sha1 of a smaller one (computed once per version)."""
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._etags:
                return self._etags[key]
        digest = hashlib.sha256() if stat.st_size >= LFS_MIN else hashlib.sha1(b"blob %d\0" % stat.st_size)
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        with self._lock:
            self._etags[key] = digest.hexdigest()
        return self._etags[key]

    # -- requests ---------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        try:
            if m := RESOLVE.match(path):
                return self._resolve(h, head, m["repo"], m["rev"], m["path"])
            if m := API_TREE.match(path):
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._api(h, head, m["repo"], m["rev"], lambda repo: self._tree(repo, m["path"], recursive),
                                 folder=m["path"])
            if path == "/api/agent-harnesses":  # huggingface_hub's telemetry registry: the hub's, with no harnesses
                return _send(h, head, 200, json.dumps({"standardEnvVars": [], "harnesses": {}}).encode(),
                             {"Content-Type": "application/json"})
            if m := API_MODEL.match(path):
                return self._api(h, head, m["repo"], m["rev"], lambda repo: self._info(m["repo"], repo))
            _send(h, head, 404, b"Not Found", {"X-Error-Message": "Not Found"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up (a range it had enough of, a timeout)

    def _repo(self, h: BaseHTTPRequestHandler, head: bool, repo_id: str, rev: str | None) -> Path | None:
        """The repo at ``rev`` (``main`` or its commit), or None after answering the hub's 404."""
        repo = self.repo_dir(repo_id)
        if repo is None:
            _error(h, head, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        commit = self.commit(repo)
        if rev not in (None, "main", commit):
            _error(h, head, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    def _resolve(self, h: BaseHTTPRequestHandler, head: bool, repo_id: str, rev: str, name: str) -> None:
        repo = self._repo(h, head, repo_id, rev)
        if repo is None:
            return
        commit = self.commit(repo)
        target = repo / name
        if any(p in ("", ".", "..") for p in name.split("/")) or not target.is_file():
            return _error(h, head, "EntryNotFound", f"{name} does not exist on \"{rev}\"", commit=commit)
        size, etag = target.stat().st_size, self.etag(target)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if size >= LFS_MIN:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)}
        start, end = 0, size - 1
        wanted = h.headers.get("Range")
        if wanted and (m := RANGE.match(wanted.strip())) and (m[1] or m[2]):
            if m[1]:
                start, end = int(m[1]), min(int(m[2]), size - 1) if m[2] else size - 1
            else:
                start = max(size - int(m[2]), 0)
            if start >= size or start > end:
                return _send(h, head, 416, b"", headers | {"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206 if "Content-Range" in headers else 200
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(end - start + 1))
        h.end_headers()
        if head:
            return
        with target.open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                h.wfile.write(chunk)
                left -= len(chunk)

    def _api(self, h: BaseHTTPRequestHandler, head: bool, repo_id: str, rev: str | None, answer,
             folder: str | None = None) -> None:
        repo = self._repo(h, head, repo_id, rev)
        if repo is not None and folder and folder.strip("/") and not (repo / folder.strip("/")).is_dir():
            _error(h, head, "EntryNotFound", f"{folder} does not exist on \"{rev}\"", commit=self.commit(repo))
        elif repo is not None:
            body = json.dumps(answer(repo)).encode()
            _send(h, head, 200, body, {"Content-Type": "application/json", "X-Repo-Commit": self.commit(repo)})

    def _info(self, repo_id: str, repo: Path) -> dict:
        modified = max((repo / n).stat().st_mtime for n in self.files(repo)) if self.files(repo) else 0.0
        return {"_id": self.commit(repo)[:24], "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
                "sha": self.commit(repo), "private": False, "gated": False, "disabled": False, "downloads": 0,
                "likes": 0, "tags": [], "library_name": None,
                "lastModified": datetime.fromtimestamp(modified, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "siblings": [{"rfilename": n} for n in self.files(repo)]}

    def _tree(self, repo: Path, under: str | None, recursive: bool) -> list[dict]:
        prefix = f"{under.strip('/')}/" if under and under.strip("/") else ""
        entries: dict[str, dict] = {}
        for name in self.files(repo):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):].split("/")
            for depth in range(1, len(rest) if recursive else min(len(rest), 2)):  # its folders (the first only)
                folder = prefix + "/".join(rest[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                            "path": folder})
            if len(rest) > 1 and not recursive:
                continue
            size = (repo / name).stat().st_size
            entry: dict = {"type": "file", "oid": self.etag(repo / name), "size": size, "path": name}
            if size >= LFS_MIN:
                entry["lfs"] = {"oid": entry["oid"], "size": size, "pointerSize": 134}
            entries[name] = entry
        return [entries[k] for k in sorted(entries)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _send(h: BaseHTTPRequestHandler, head: bool, status: int, body: bytes, headers: dict[str, str]) -> None:
    h.send_response(status)
    for key, value in headers.items():
        h.send_header(key, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if not head:
        h.wfile.write(body)


def _error(h: BaseHTTPRequestHandler, head: bool, code: str, message: str, commit: str | None = None) -> None:
    """The hub's 404: ``X-Error-Code`` (which huggingface_hub turns into its error classes) and a JSON body."""
    headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    _send(h, head, 404, json.dumps({"error": message}).encode(), headers)


def serve_folder(source: Path, repo: Path, skip: tuple[str, ...] = ()) -> Path:
    """Put ``source``'s files (but those named in ``skip``) into the repo folder ``repo`` as hard links (copies
    across file systems): a repo from files already on disk (a saved model) without doubling the space."""
    repo.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.name not in skip):
        target = repo / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(path)
        except OSError:
            shutil.copy2(path, target)
    return repo


@contextmanager
def hub_endpoint(url: str, home: Path) -> Iterator[None]:
    """Point huggingface_hub (so transformers and SAELens) at the hub ``url``, online, with ``home`` as ``HF_HOME``.

    huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the cache folders into ``huggingface_hub.constants``
    at import, so those constants are patched as well as the environment (tests/conftest.py sets the hubs offline);
    so are the shared ``HfApi`` clients that keep the endpoint they were made with (huggingface_hub's module-level
    one, behind ``model_info``; transformers' ``hf_api()``, behind its ``list_repo_tree`` calls). All are restored on
    exit. A subprocess needs only the environment (``HF_ENDPOINT``, ``HF_HOME``)."""
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import constants, hf_api

    url = url.rstrip("/")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("HF_ENDPOINT", url)
        mp.setenv("HF_HOME", str(home))
        mp.setattr(constants, "ENDPOINT", url)
        mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(hf_api.api, "endpoint", url)
        mp.setattr(transformers_hub, "_hf_api", None)  # made afresh, with this endpoint, on first use
        old_home = constants.HF_HOME
        for name, value in vars(constants).copy().items():  # the caches, the token, the telemetry files
            if name.isupper() and isinstance(value, str) and value.startswith(old_home):
                mp.setattr(constants, name, str(home) + value[len(old_home):])
        for name in ("HF_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE"):  # set apart from HF_HOME
            mp.setattr(constants, name, str(home / {"HF_HUB_CACHE": "hub", "HF_ASSETS_CACHE": "assets",
                                                    "HF_XET_CACHE": "xet"}[name]))
        yield
