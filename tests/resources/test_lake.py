from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sae_assets import settings
from sae_assets.resources.lake import LakeReadError, LakeResource


def test_the_platform_lake_follows_settings_and_the_resource_reads_no_env(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    from sae_assets.defs.resources import default_resources
    from sae_assets.viewer.__main__ import default_lake

    monkeypatch.delenv("SAE_ASSETS_LAKE", raising=False)
    monkeypatch.delenv("SAE_ASSETS_FILES", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert default_resources()["lake"].root_uri == str(tmp_path / "home" / "lake") == default_lake()
    monkeypatch.setenv("SAE_ASSETS_LAKE", "s3://bucket/lake/")
    monkeypatch.setenv("SAE_ASSETS_FILES", str(tmp_path / "files"))
    lake = default_resources()["lake"]
    assert lake.table_uri("sae_decoder") == "s3://bucket/lake/sae_decoder" and default_lake() == "s3://bucket/lake/"
    assert lake.files_root == str(tmp_path / "files")
    bare = LakeResource()  # configured only by what it is given, like the other resources
    assert (bare.root, bare.files_root) == (settings.DEFAULT_LAKE_ROOT, None)
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.delenv("SAE_ASSETS_LAKE")
    assert settings.lake_root() == "dagster_home/lake" == default_lake()


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


def _frame(n: int, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"feature": pl.Series(range(offset, offset + n), dtype=pl.Int32),
                         "density": [0.5] * n})


def _data_file(lake_root: Path, table: str, layer: int) -> Path:
    (path,) = (lake_root / table).glob(f"model=*/layer={layer}/*.parquet")
    return path


def test_a_damaged_partition_fails_the_read_naming_the_table_and_the_asset_to_rematerialize(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = LakeResource(root=str(root))
    for layer in (1, 2):
        lake.write_partition("feature_stats", _frame(40, layer * 100), "m@x", layer)
    uri = f"{root}/feature_stats"
    todo = ("Re-materialize activation_scan (it writes feature_stats, activation_examples, feature_profiles and "
            "cooccurrence together) for partition 1|m@x, then run this step again.")

    truncated = _data_file(root, "feature_stats", 1)
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    for read in (lambda: lake.scan_partition("feature_stats", "m@x", 1), lambda: lake.scan_partition(
            "feature_stats", "m@x"), lambda: lake.read_partition("feature_stats", "m@x", 1),
            lambda: next(lake.iter_partition("feature_stats", "m@x", 1))):
        with pytest.raises(LakeReadError) as err:
            read()
        assert str(err.value).startswith(f"Cannot read the Delta table feature_stats ({uri}) for partition 1|m@x: "
                                         f"its data file {truncated} is {len(whole) // 2:,} "
                                         f"bytes where the table's log recorded {len(whole):,} (truncated or "
                                         "overwritten).")
        assert str(err.value).endswith(todo)
    assert lake.read_partition("feature_stats", "m@x", 2)["feature"].to_list() == list(range(200, 240))  # intact

    truncated.unlink()
    with pytest.raises(LakeReadError, match=rf"its data file .*/layer=1/{truncated.name} is missing\. "):
        lake.scan_partition("feature_stats", "m@x", 1)

    with pytest.raises(LakeReadError, match=r"^Cannot read the Delta table feature_map_edges .* for partition 2\|m@x: "
                       r"the table does not exist \(never materialized, or deleted\)\. Re-materialize feature_map "
                       r"\(it writes feature_map_edges\) for partition 2\|m@x"):
        lake.scan_partition("feature_map_edges", "m@x", 2)

    for log in (root / "feature_stats" / "_delta_log").glob("*.json"):
        log.write_text("{not json")
    with pytest.raises(LakeReadError, match=r"^Cannot read the Delta table feature_stats \(.*\): its transaction log "
                       r"\(_delta_log\) cannot be read \(DeltaError: .*\)\. Move .*/feature_stats aside \(or restore "
                       r"it from a backup\), then re-materialize activation_scan .* for every partition it held\.$"):
        lake.missing_tables("feature_stats")


def test_a_file_corrupted_at_its_recorded_size_fails_the_collect_as_a_lake_read_error(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = LakeResource(root=str(root))
    lake.write_partition("explanations", _frame(40), "m@x", 3)
    damaged = _data_file(root, "explanations", 3)
    size = damaged.stat().st_size
    damaged.write_bytes(b"\0" * size)  # same size: the log's record cannot tell
    with pytest.raises(LakeReadError, match=r"for partition 3\|m@x: a data file cannot be read .*Re-materialize "
                       r"explanations for partition 3\|m@x"):
        lake.read_partition("explanations", "m@x", 3)
    with pytest.raises(LakeReadError, match=r"a data file cannot be read"):
        list(lake.iter_partition("explanations", "m@x", 3))


def test_a_truncated_file_on_an_s3_lake_is_found_before_the_read(s3_options: dict[str, str]) -> None:
    import boto3

    lake = LakeResource(root="s3://lake/read-check", storage_options=s3_options)  # moto's state is per process
    lake.write_partition("cooccurrence", _frame(30), "m@x", 4)
    assert lake.read_partition("cooccurrence", "m@x", 4).height == 30
    s3 = boto3.client("s3", endpoint_url=s3_options["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="read-check/cooccurrence/model=")["Contents"]]
    body = s3.get_object(Bucket="lake", Key=key)["Body"].read()
    s3.put_object(Bucket="lake", Key=key, Body=body[:100])
    with pytest.raises(LakeReadError, match=rf"^Cannot read the Delta table cooccurrence \(s3://lake/read-check/"
                       rf"cooccurrence\) for partition 4\|m@x: its data file s3://lake/read-check/cooccurrence/"
                       rf".*\.parquet is 100 bytes where the table's log recorded {len(body):,} \(truncated or "
                       r"overwritten\)\. Re-materialize activation_scan"):
        lake.scan_partition("cooccurrence", "m@x", 4)
