"""Materializing real partitions in tests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.feature_labels import feature_labels
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import partition_key
from sae_assets.resources.corpus import CorpusResource
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.embedder import EmbedderResource
from sae_assets.resources.labeller import LabellerResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from sae_assets.resources.neuronpedia import NeuronpediaResource
from sae_assets.resources.sae_source import SaeSourceResource

TINY_SCAN = {"max_tokens": 3000, "context_size": 128, "window": 16, "batch_tokens": 1024, "top_k": 3,
             "n_quantiles": 2, "per_quantile": 1, "reservoir": 8, "n_random": 2, "radius": 4}
TINY_EVALS = {"eval_tokens": 512, "context_size": 64}
TINY_TRAINING = {"training_tokens": 4096, "eval_tokens": 1024, "epochs": 2.0, "batch_size": 256,
                 "context_size": 64, "lm_batch_size": 16}


def resources(lake_root: str, corpus: CorpusResource | None = None, labeller: LabellerResource | None = None,
              neuronpedia: NeuronpediaResource | None = None) -> dict:
    device = DeviceResource(device="cpu", dtype="float32")
    lake = LakeResource(root=lake_root)
    return {
        "embedder": EmbedderResource(device=device),
        "neuronpedia": neuronpedia or NeuronpediaResource(s3_url="http://127.0.0.1:9", api_url="http://127.0.0.1:9",
                                                          retries=0, timeout_s=2),
        "labeller": labeller or LabellerResource(device=device),
        "device": device,
        "lake": lake,
        "language_model": LanguageModelResource(device=device),
        "sae_source": SaeSourceResource(device=device, lake=lake),
        "corpus": corpus or CorpusResource(max_documents=400),
    }


def materialize(instance: dg.DagsterInstance, lake_root: str, model: str, layer: int | str,
                assets=(trained_sae, sae_decoder), corpus: CorpusResource | None = None,
                training: dict | None = None, scan: dict | None = None, labels: dict | None = None,
                labeller: LabellerResource | None = None, neuronpedia: NeuronpediaResource | None = None,
                extra_ops: dict | None = None) -> dg.ExecuteInProcessResult:
    ops = {}
    if trained_sae in assets:
        ops["trained_sae"] = {"config": training or TINY_TRAINING}
    if activation_scan in assets:
        ops["activation_scan"] = {"config": scan or TINY_SCAN}
    if feature_labels in assets:
        ops["feature_labels"] = {"config": labels or {"max_features": 6}}
    run_config = {"ops": {**ops, **(extra_ops or {})}}
    return dg.materialize(list(assets), partition_key=partition_key(model, layer), instance=instance,
                          resources=resources(lake_root, corpus, labeller, neuronpedia), run_config=run_config,
                          raise_on_error=False)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = result.get_step_failure_events()
    assert failures, "expected a failed step"
    error = failures[0].step_failure_data.error
    texts = []
    while error is not None:
        texts.append(error.message)
        error = error.cause
    return "\n".join(texts)


def lake_tables(lake_root: str) -> list[str]:
    root = Path(lake_root)
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").exists()) if root.exists() else []


def run_platform_job(instance: dg.DagsterInstance, job_name: str, partition: str,
                     run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """The selection of the platform's job ``job_name`` (its assets and their checks), with the resources
    :func:`~sae_assets.defs.resources.default_resources` binds from the environment *now*: the code location's own
    binding is made when ``sae_assets.definitions`` is first imported, by whichever test of the process came first."""
    from sae_assets.definitions import defs
    from sae_assets.defs.jobs import jobs
    from sae_assets.defs.resources import default_resources

    job = next(j for j in jobs if j.name == job_name)
    return dg.materialize([*(defs.assets or []), *(defs.asset_checks or [])], selection=job.selection,
                          partition_key=partition, instance=instance, resources=default_resources(),
                          run_config=run_config or {}, raise_on_error=False)
