"""Headless Chromium for UI tests: Debian's ``chromium`` driven by Playwright.

``scripts/setup`` installs Debian's chromium where apt-get is available. Without a browser the UI tests
skip, unless ``SAE_ASSETS_REQUIRE_BROWSER=1`` (CI sets it), which turns a missing browser into a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
# As root in a sandbox: no sandbox, no GPU (WebGL through SwiftShader), and no background connections
# (the network is closed: they would be refused, many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    path = os.environ.get("SAE_ASSETS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no chromium on PATH (scripts/setup installs Debian's chromium; or set SAE_ASSETS_CHROMIUM)"
        if os.environ.get("SAE_ASSETS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextmanager
def browser_page(width: int = 1280, height: int = 800) -> Iterator:
    """A Playwright page in headless Chromium; console errors are collected in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.errors = []
            page.on("pageerror", lambda err: page.errors.append(str(err)))
            page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    """Keep a screenshot under ``test-artifacts/`` (git-ignored; CI keeps it)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(args: list[str], url: str, timeout_s: float = 60.0, env: dict | None = None,
            log_name: str = "server.log") -> Iterator[subprocess.Popen]:
    """Run ``python <args>`` in the repo root (`dagster dev` finds the location there) until ``url`` answers."""
    with serving_command([sys.executable, *args], url, REPO, {**os.environ, **(env or {})}, timeout_s,
                         log_name) as proc:
        yield proc


@contextmanager
def serving_command(argv: list[str], url: str, cwd: Path, env: dict[str, str], timeout_s: float = 60.0,
                    log_name: str = "server.log") -> Iterator[subprocess.Popen]:
    """Run ``argv`` in ``cwd`` with exactly ``env`` until ``url`` answers; stop it (and its children) afterwards.
    Its output goes to ``test-artifacts/<log_name>``, whose tail is in the failure message when it never answers."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / log_name
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if requests.get(url, timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    pytest.fail(f"{' '.join(argv)} did not answer at {url} (exit {proc.poll()}):\n{tail}")
                time.sleep(0.3)
            yield proc
        finally:  # the whole process group: `dagster dev` has a webserver and a daemon below it
            _kill_group(proc, signal.SIGTERM)
            try:  # `dagster dev`'s webserver can wait tens of seconds on connections a browser left: not ours to wait
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # the group has already exited
        pass
