"""The README's main job: the embedded default's full pipeline per layer, then its model-level reports,
as runs visible in the UI.

    python -m sae_assets.demo [--model smollm2-135m@demo-res] [--layers 2 4 6] [--job JOB] [--full-budgets]

The job defaults to the one that analyses the model's SAEs end to end: ``full_pipeline`` for SAEs the platform
trains, ``analyze_sae`` for pretrained ones (GemmaScope, LlamaScope, a local directory):

    python -m sae_assets.demo --model gemma-2-2b@gemmascope-res-16k --layers 12 --full-budgets   # on a GPU

Uses the instance at ``DAGSTER_HOME`` (default: ``dagster_home/`` in the repo), so the runs,
materializations and partitions show up in ``dagster dev``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from sae_assets import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DEFAULT = "smollm2-135m@demo-res"

log = logging.getLogger("sae_assets.demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_DEFAULT, help="catalog model key")
    parser.add_argument("--layers", type=int, nargs="*", help="layers (default: every layer with an SAE)")
    parser.add_argument("--job", help="job to run per partition (default: full_pipeline for SAEs the platform "
                        "trains, analyze_sae for pretrained ones)")
    parser.add_argument("--full-budgets", action="store_true",
                        help="the gpu budget profile (the assets' own defaults) whatever the device "
                        "(SAE_ASSETS_BUDGET=gpu; default: the profile sae_assets/defs/budgets.py picks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    home = settings.get(settings.DAGSTER_HOME, str(REPO_ROOT / "dagster_home"))
    os.environ[settings.DAGSTER_HOME] = str(Path(home).resolve())  # the instance's directory, for Dagster
    if args.full_budgets:
        os.environ[settings.BUDGET] = "gpu"

    import dagster as dg

    from sae_assets.catalog import load_catalog
    from sae_assets.definitions import defs
    from sae_assets.defs.jobs import PIPELINE_JOBS, pipeline_job_name
    from sae_assets.defs.partitions import partition_key, register_models
    from sae_assets.defs.run_recovery import reap_dead_runs, run_worker_tags
    from sae_assets.resources.lake import LakeResource

    catalog = load_catalog()
    entry = catalog.entry(args.model)
    layers = args.layers or list(entry.layers)
    for layer in layers:
        catalog.resolve(args.model, layer)
    instance = dg.DagsterInstance.get()
    reap_dead_runs(instance)  # a demo killed earlier (OOM, kill -9) must not hold the gpu pool's slot
    register_models(instance, [args.model], catalog)
    job_name = args.job or pipeline_job_name(entry.sae.kind)
    job = defs.resolve_job_def(job_name)
    start = time.perf_counter()
    failed = []
    for layer in layers:
        key = partition_key(args.model, layer)
        log.info("Running %s for partition %s", job_name, key)
        # No run config: the assets take their budgets from the partition's profile (cpu on this machine
        # unless it has a GPU), as runs started by the sensor, automation or the UI do.
        # Tagged with this process, so that a later run or demo can fail the run if the process dies (OOM).
        result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False,
                                        tags=run_worker_tags())
        if not result.success:
            failed.append(layer)
            log.error("Run %s for %s failed", result.run_id, key)
    if job_name in PIPELINE_JOBS and len(failed) < len(layers):
        log.info("Running model_reports for %s", args.model)
        result = defs.resolve_job_def("model_reports").execute_in_process(
            instance=instance, partition_key=args.model, raise_on_error=False, tags=run_worker_tags())
        if not result.success:
            failed.append("model_reports")
            log.error("Run %s (model_reports for %s) failed", result.run_id, args.model)
    log.info("Done in %.0fs (%s failed); lake at %s", time.perf_counter() - start, failed or "none",
             LakeResource(root=settings.lake_root()).root_uri)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
