"""The scan's four tables carry one scan_id; a process killed between two table writes leaves them mixed, the
blocking check same_scan fails on that partition, and scanning it again heals it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sae_assets.core.scan.scan_identity import SCAN_TABLES
from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import model_layer_partitions, partition_key, register_models
from sae_assets.defs.same_scan_check import same_scan, scan_agreement
from sae_assets.resources.lake import LakeResource
from tests.conftest import REPO_ROOT
from tests.defs.helpers import materialize, resources

pytestmark = pytest.mark.slow
MODEL, LAYER = "smollm2-135m@test-res", 3
# A scan in its own process whose lake writes kill it (SIGKILL: no cleanup, no Dagster failure event) when the
# write numbered argv[2] begins: the tables written before it hold the new scan, the rest the previous one.
KILLED_SCAN = """
import os, signal, sys
import dagster as dg
from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.partitions import register_models
from sae_assets.resources.lake import LakeResource
from tests.defs.helpers import TINY_SCAN, materialize

lake_root, kill_at = sys.argv[1], int(sys.argv[2])
write, writes = LakeResource.write_partition, []

def write_or_die(self, *args, **kwargs):
    if len(writes) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    writes.append(args[0])
    return write(self, *args, **kwargs)

LakeResource.write_partition = write_or_die
with dg.instance_for_test() as instance:
    register_models(instance, [sys.argv[3]])
    materialize(instance, lake_root, sys.argv[3], int(sys.argv[4]), assets=(activation_scan,),
                scan={**TINY_SCAN, "seed": 7})
"""
CHECKS = [same_scan]


def _check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}


def test_a_scan_killed_between_table_writes_fails_same_scan_until_it_is_rerun(test_catalog: Path, lake_root: str,
                                                                              smollm2) -> None:
    with dg.instance_for_test() as instance:
        register_models(instance, [MODEL])
        first = materialize(instance, lake_root, MODEL, LAYER, assets=(trained_sae, sae_decoder, activation_scan,
                                                                       *CHECKS))
        assert first.success and _check_results(first) == dict.fromkeys(SCAN_TABLES, True)
        lake = LakeResource(root=lake_root)
        before = scan_agreement(lake, MODEL, LAYER).scan_id
        meta = {m.asset_key.to_user_string(): m.metadata["scan_id"].value
                for m in first.asset_materializations_for_node("activation_scan")}
        assert before is not None and meta == dict.fromkeys(SCAN_TABLES, before)
        profiles = lake.scan_partition("feature_profiles", MODEL, LAYER).collect()

        # Killed as the third table's write begins: feature_stats and activation_examples are the new scan's.
        killed = subprocess.run([sys.executable, "-c", KILLED_SCAN, lake_root, "2", MODEL, str(LAYER)],
                                cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        mixed = scan_agreement(lake, MODEL, LAYER)
        assert mixed.scan_id is None and mixed.ids["feature_profiles"] == mixed.ids["cooccurrence"] == (before,)
        assert mixed.ids["feature_stats"] == mixed.ids["activation_examples"] != (before,)
        assert "from 2 scans" in (mixed.problem() or "")
        # Nothing was lost: the tables the dead scan did not reach hold the previous scan whole.
        assert lake.scan_partition("feature_profiles", MODEL, LAYER).collect().equals(profiles)

        # The Dagster check, run on its own as from the UI, fails on every scan table and says what to do.
        # (the UI's "Execute" on a check: a run of the checks alone, the partition in its tags)
        job = dg.define_asset_job("check_scan", selection=dg.AssetSelection.checks(*CHECKS),
                                  partitions_def=model_layer_partitions)
        checked = dg.Definitions(assets=[activation_scan], asset_checks=CHECKS, jobs=[job],
                                 resources=resources(lake_root)).resolve_job_def("check_scan").execute_in_process(
            tags={"dagster/partition": partition_key(MODEL, LAYER)}, instance=instance, raise_on_error=False)
        evaluations = checked.get_asset_check_evaluations()
        assert len(evaluations) == 4 and not any(e.passed for e in evaluations)
        assert all("re-materialize activation_scan" in (e.description or "") for e in evaluations)

        healed = materialize(instance, lake_root, MODEL, LAYER, assets=(activation_scan, *CHECKS))
        assert healed.success and _check_results(healed) == dict.fromkeys(SCAN_TABLES, True)
        after = scan_agreement(lake, MODEL, LAYER).scan_id
        assert after not in (None, before, *mixed.ids["feature_stats"])
        assert set(lake.scan_partition("cooccurrence", MODEL, LAYER).collect()["scan_id"]) == {after}
        assert pl.read_delta(f"{lake_root}/feature_stats").height == 256  # one partition, replaced, not appended
