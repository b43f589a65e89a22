"""new_sae_sensor with build_sensor_context: baseline, new drops and catalog edits, idempotence, bad input."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from sae_assets.defs.partitions import MODEL_PARTITIONS_NAME
from sae_assets.defs.sensors import new_sae_sensor
from tests.catalog.test_drop_folder import drop_sae

NEW_ENTRY = """
  smollm2-135m@added:
    language_model: *smollm2
    hook: blocks.{layer}.hook_resid_post
    d_model: 576
    layers: [2]
    sae: {source: train, architecture: topk, d_sae: 64, k: 4}
"""


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = new_sae_sensor(context)
    for request in result.dynamic_partitions_requests:  # what the daemon does with them
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def requested(result: dg.SensorResult) -> list[tuple[str, str | None]]:
    return [(str(r.partition_key), r.job_name) for r in result.run_requests]


def test_baseline_then_new_saes_start_runs_once(test_catalog: Path, tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        first = tick(instance, None)
        assert first.run_requests == []  # the catalog as it is: partitions only
        assert "smollm2-135m@test-res" in instance.get_dynamic_partitions(MODEL_PARTITIONS_NAME)
        assert tick(instance, first.cursor).run_requests == []

        drop_sae(tmp_path / "sae_drop", "smollm2-135m@mine", 2)  # a SAELens directory dropped
        test_catalog.write_text(test_catalog.read_text() + NEW_ENTRY)  # and a catalog edit
        second = tick(instance, first.cursor)
        assert requested(second) == [("2|smollm2-135m@added", "full_pipeline"),
                                     ("2|smollm2-135m@mine", "analyze_sae")]
        assert {r.run_key for r in second.run_requests} == {"new-sae:smollm2-135m@added|2",
                                                             "new-sae:smollm2-135m@mine|2"}
        assert {"smollm2-135m@added", "smollm2-135m@mine"} <= set(instance.get_dynamic_partitions(
            MODEL_PARTITIONS_NAME))
        assert tick(instance, second.cursor).run_requests == []  # idempotent
        drop_sae(tmp_path / "sae_drop", "smollm2-135m@mine", 4)  # a new layer of a known key
        third = tick(instance, second.cursor)
        assert requested(third) == [("4|smollm2-135m@mine", "analyze_sae")]
        drop_sae(tmp_path / "sae_drop", "smollm2-135m@mine", 99)  # past the layer partitions: waits for a reload
        fourth = tick(instance, third.cursor)
        assert fourth.run_requests == [] and "smollm2-135m@mine|99" not in fourth.cursor


def test_malformed_entries_and_folders_are_logged_and_skipped(test_catalog: Path, tmp_path: Path,
                                                              capsys) -> None:
    with dg.instance_for_test() as instance:
        cursor = tick(instance, None).cursor
        (tmp_path / "sae_drop" / "smollm2-135m@nocfg" / "1").mkdir(parents=True)
        drop_sae(tmp_path / "sae_drop", "smollm2-135m@fine", 1)
        test_catalog.write_text(test_catalog.read_text() + NEW_ENTRY + NEW_ENTRY.replace("d_sae: 64", "d_sae: 32"))
        result = tick(instance, cursor)  # the duplicate key is skipped, the good drop still runs
        assert requested(result) == [("1|smollm2-135m@fine", "analyze_sae")]
        log = capsys.readouterr().err  # the sensor's log (context.log)
        assert "defined more than once" in log and "has no cfg.json" in log
        assert tick(instance, result.cursor).run_requests == [] and "Skipped" not in capsys.readouterr().err

        test_catalog.write_text("models: [")  # the whole file broken: skip, cursor kept, nothing else disturbed
        broken = new_sae_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert isinstance(broken, dg.SkipReason) and "not valid YAML" in broken.skip_message
        assert "smollm2-135m@fine" in instance.get_dynamic_partitions(MODEL_PARTITIONS_NAME)


def test_one_bad_file_is_skipped_by_name_and_never_crashes_the_sensor(test_catalog: Path, tmp_path: Path,
                                                                      capsys) -> None:
    with dg.instance_for_test() as instance:
        cursor = tick(instance, None).cursor
        weights = drop_sae(tmp_path / "sae_drop", "smollm2-135m@mine", 2) / "sae_weights.safetensors"
        whole = weights.read_bytes()
        weights.write_bytes(whole[:500])  # still being copied
        waiting = tick(instance, cursor)
        assert waiting.run_requests == [] and waiting.skip_reason is not None
        assert waiting.skip_reason.skip_message.startswith(
            f"No new SAE to run. Skipped until fixed: {weights.parent}: {weights} is truncated or corrupt")
        assert f"Skipped {weights.parent}: {weights} is truncated" in capsys.readouterr().err

        good = test_catalog.read_text()
        test_catalog.write_bytes(b"models:\x00 {}")  # a binary file saved over the catalog
        broken = new_sae_sensor(dg.build_sensor_context(instance=instance, cursor=waiting.cursor))
        assert isinstance(broken, dg.SkipReason)
        assert broken.skip_message == (f"SAE catalog unreadable: SAE catalog {test_catalog} is not valid YAML "
                                       "(character 7: unacceptable character #x0000): fix the file there; nothing "
                                       "was loaded from it.")
        test_catalog.write_text(good)

        weights.write_bytes(whole)  # the copy completes: its run starts, once
        done = tick(instance, waiting.cursor)
        assert requested(done) == [("2|smollm2-135m@mine", "analyze_sae")] and done.skip_reason is None
        assert tick(instance, done.cursor).run_requests == []
