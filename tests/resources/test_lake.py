from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sae_assets.resources.lake import LakeResource


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAE_ASSETS_LAKE", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert LakeResource().root_uri == str(tmp_path / "home" / "lake")
    monkeypatch.setenv("SAE_ASSETS_LAKE", "s3://bucket/lake/")
    assert LakeResource().table_uri("sae_decoder") == "s3://bucket/lake/sae_decoder"
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.delenv("SAE_ASSETS_LAKE")
    assert LakeResource().root == "dagster_home/lake"


def test_remote_lake_needs_a_local_files_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set SAE_ASSETS_FILES"):
        LakeResource(root="s3://bucket/lake").local_dir("trained_saes")
    files = LakeResource(root="s3://bucket/lake", files_root=str(tmp_path)).local_dir("trained_saes", "m@x")
    assert files == tmp_path / "trained_saes" / "m@x" and files.is_dir()


def test_write_and_scan_through_the_resource(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    assert lake.table_version("t") is None and lake.missing_tables("t", "u") == ["t", "u"]
    result = lake.write_partition("t", pl.DataFrame({"feature": [0, 1]}), "m@x", 3)
    assert result.num_rows == 2 and lake.table_version("t") == result.version
    assert lake.missing_tables("t", "u") == ["u"]
    assert lake.scan_partition("t", "m@x", 3).collect()["feature"].to_list() == [0, 1]
