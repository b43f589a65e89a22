"""The viewer tests' shared lake (every table a feature page reads, written once per test module) and browser
page (one Chromium page per module, cleared and resized for each test)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import browser_page
from tests.viewer.test_feature_data import write_lake


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("feature_lake") / "lake")
    write_lake(root)
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with browser_page() as page:
        yield page


@pytest.fixture
def page(browser: Any) -> Any:
    browser.errors.clear()
    browser.set_viewport_size({"width": 1280, "height": 800})
    return browser
