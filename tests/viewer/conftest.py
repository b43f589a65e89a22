"""The viewer tests' shared lake: every table a feature page reads, written once per test module."""

from __future__ import annotations

import pytest

from tests.viewer.test_feature_data import write_lake


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("feature_lake") / "lake")
    write_lake(root)
    return root
