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
from typing import TYPE_CHECKING

from sae_assets import settings

if TYPE_CHECKING:  # dagster is imported when the demo runs (after DAGSTER_HOME is set)
    import dagster as dg

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DEFAULT = "smollm2-135m@demo-res"

log = logging.getLogger("sae_assets.demo")


# Budgets for 2 CPU cores. The offline corpus is Wikipedia summaries (median ~100 tokens), so the
# co-occurrence window is 64 tokens instead of SFAL's 256.
DEMO_SCAN_CONFIG = {"max_tokens": 65_536, "window": 64, "context_size": 512, "batch_tokens": 4096}
# SmolLM2 labels ~1 feature/s on 2 cores: the demo asks it for the first 32 features of each layer; every
# feature gets its keyword label, so SFAL scores every explained feature, not 32 of 2,048.
DEMO_LABELS_CONFIG = {"llm_max_features": 32}
# Prompt optimization runs the model dozens of times per step: the demo optimizes 4 targets briefly.
DEMO_PROMPTS_CONFIG = {"max_features": 4, "max_steps": 30, "batch_size": 32, "top_k": 32, "continuous_steps": 50}


def demo_run_config(job: dg.JobDefinition) -> dict:
    ops = {}
    if "activation_scan" in job.graph.node_dict:
        ops["activation_scan"] = {"config": DEMO_SCAN_CONFIG}
    if "feature_labels" in job.graph.node_dict:
        ops["feature_labels"] = {"config": DEMO_LABELS_CONFIG}
    if "optimized_prompts" in job.graph.node_dict:
        ops["optimized_prompts"] = {"config": DEMO_PROMPTS_CONFIG}
    return {"ops": ops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_DEFAULT, help="catalog model key")
    parser.add_argument("--layers", type=int, nargs="*", help="layers (default: every layer with an SAE)")
    parser.add_argument("--job", help="job to run per partition (default: full_pipeline for SAEs the platform "
                        "trains, analyze_sae for pretrained ones)")
    parser.add_argument("--full-budgets", action="store_true",
                        help="use the assets' own budgets (sized for a GPU) instead of the demo's CPU budgets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    home = settings.get(settings.DAGSTER_HOME, str(REPO_ROOT / "dagster_home"))
    os.environ[settings.DAGSTER_HOME] = str(Path(home).resolve())  # the instance's directory, for Dagster

    import dagster as dg

    from sae_assets.catalog import load_catalog
    from sae_assets.definitions import defs
    from sae_assets.defs.jobs import PIPELINE_JOBS, pipeline_job_name
    from sae_assets.defs.partitions import partition_key, register_models
    from sae_assets.defs.run_recovery import reap_dead_runs
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
    run_config = {} if args.full_budgets else demo_run_config(job)
    start = time.perf_counter()
    failed = []
    for layer in layers:
        key = partition_key(args.model, layer)
        log.info("Running %s for partition %s", job_name, key)
        result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False,
                                        run_config=run_config)
        if not result.success:
            failed.append(layer)
            log.error("Run %s for %s failed", result.run_id, key)
    if job_name in PIPELINE_JOBS and len(failed) < len(layers):
        log.info("Running model_reports for %s", args.model)
        result = defs.resolve_job_def("model_reports").execute_in_process(
            instance=instance, partition_key=args.model, raise_on_error=False)
        if not result.success:
            failed.append("model_reports")
            log.error("Run %s (model_reports for %s) failed", result.run_id, args.model)
    log.info("Done in %.0fs (%s failed); lake at %s", time.perf_counter() - start, failed or "none",
             LakeResource().root_uri)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
