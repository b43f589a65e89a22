"""``trained_sae``: an SAE the platform trains itself (catalog entries with ``sae.source: train``)."""

import time

import dagster as dg
import numpy as np
import polars as pl
import torch
from pydantic import Field

from sae_assets.catalog import SaeLocation
from sae_assets.core.common.language_model import LanguageModel
from sae_assets.core.common.plots import histogram_png
from sae_assets.core.common.precision import compute_dtype, precision_name
from sae_assets.core.sae.token_contexts import pack_contexts
from sae_assets.core.sae.training import SaeTrainingConfig
from sae_assets.core.sae.training_run import TrainingRun, train_on_contexts, trained_sae_row
from sae_assets.defs.budgets import with_budget
from sae_assets.defs.executors import GPU_OP_TAGS, GPU_POOL
from sae_assets.defs.metadata import input_table_versions, png_markdown, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.corpus import CorpusError, CorpusResource
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from sae_assets.resources.sae_source import SaeSourceResource


class TrainedSaeConfig(dg.Config):
    """Training budget. Defaults finish a layer of the embedded default in about a minute on 2 CPU
    cores; on a GPU raise ``training_tokens`` (and ``epochs``) by orders of magnitude. Defaults of the fields
    shared with :class:`SaeTrainingConfig` are its defaults (see ``TRAINING_CONFIG``)."""

    training_tokens: int = Field(default=65_536, description="Activation vectors collected for training.")
    eval_tokens: int = Field(default=8_192, description="Held-out activation vectors for the metrics.")
    epochs: float = Field(default=6.0, description="Passes over the training activations.")
    context_size: int = Field(default=128, description="Tokens per context, BOS included (BOS not trained on).")
    lm_batch_size: int = Field(default=16, description="Contexts per language-model forward.")
    batch_size: int = Field(default=SaeTrainingConfig.batch_size,
                            description="Activation vectors per SAE training step.")
    lr: float = Field(default=SaeTrainingConfig.lr, description="Adam learning rate (constant, warm-up, linear decay).")
    seed: int = Field(default=SaeTrainingConfig.seed, description="Seeds the SAE's initialization and the "
                      "shuffling of the training activations.")
    precision: str = Field(default=SaeTrainingConfig.precision, description="Matmul precision of training: "
                           "float32, bfloat16 (SAELens's autocast; weights and optimizer stay float32) or auto "
                           "(bf16 where the device multiplies it natively). Activations are collected and the SAE "
                           "evaluated in float32 either way.")


TRAINING_CONFIG = ConfigPair(
    TrainedSaeConfig, SaeTrainingConfig,
    asset_only={"training_tokens": "activations the asset collects (x epochs: training_samples)",
                "eval_tokens": "held-out activations the asset evaluates on",
                "epochs": "x training_tokens: training_samples",
                "context_size": "how the asset packs corpus contexts", "lm_batch_size": "activation collection"},
    core_only={"architecture": "the catalog entry's sae.train", "d_sae": "the catalog entry's sae.train",
               "k": "the catalog entry's sae.train", "training_samples": "training_tokens x epochs"},
)


def training_contexts(context: dg.AssetExecutionContext, location: SaeLocation, config: TrainedSaeConfig,
                      language_model: LanguageModelResource,
                      corpus: CorpusResource) -> tuple[LanguageModel, str, torch.Tensor]:
    """The language model, the corpus's name and the packed contexts (training + held-out tokens); fails on a
    corpus error, a hook the model lacks, or a d_model other than the catalog's."""
    entry = location.entry
    n_contexts = -(-(config.training_tokens + config.eval_tokens) // (config.context_size - 1))
    try:
        documents = corpus.load()
        t0 = time.perf_counter()
        lm = language_model.load(entry.language_model)
        context.log.info("Loaded %s on %s (%s) in %.1fs", lm.name, lm.device, lm.dtype, time.perf_counter() - t0)
        if entry.d_model is not None and lm.d_model != entry.d_model:
            raise dg.Failure(f"{lm.name} has d_model={lm.d_model} but the catalog says {entry.d_model} for "
                             f"{location.model_key!r}: fix d_model in the catalog.")
        lm.check_hook(location.hook_name)
        contexts = pack_contexts(documents.documents, lm.tokenize, lm.bos_token_id,
                                 config.context_size, n_contexts)
    except (CorpusError, ValueError) as err:
        raise dg.Failure(str(err)) from err
    return lm, documents.name, contexts


def _metadata(run: TrainingRun, row: pl.DataFrame, config: TrainedSaeConfig) -> dict:
    """The trained SAE's figures: its metrics, shape, budget, timings and density histogram."""
    density = run.metrics.feature_density.numpy()
    return {
        "sae_path": dg.MetadataValue.path(row["sae_path"][0]),
        **{name: dg.MetadataValue.float(float(v)) for name, v in run.metrics.as_dict().items()
           if name != "n_tokens"},
        "d_in": int(run.sae.cfg.d_in), "d_sae": row["d_sae"][0], "architecture": row["architecture"][0],
        "training_tokens": config.training_tokens, "training_samples": row["training_samples"][0],
        "collect_seconds": round(run.collect_seconds, 1), "train_seconds": round(run.train_seconds, 1),
        "feature_density": png_markdown(
            histogram_png(np.log10(density + 1e-7), "Feature density on held-out tokens",
                          "log10(density)"), "density histogram"),
    }


@dg.asset(
    partitions_def=model_layer_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"torch", "delta"},
    group_name="sae",
    owners=["team:interpretability"],
    code_version="1",
    description="An SAE trained by the platform with SAELens's trainer on the corpus; stored as a SAELens "
    "directory under the lake, with its metrics in a one-row Delta table per partition.",
)
def trained_sae(
    context: dg.AssetExecutionContext,
    config: TrainedSaeConfig,
    lake: LakeResource,
    device: DeviceResource,
    language_model: LanguageModelResource,
    sae_source: SaeSourceResource,
    corpus: CorpusResource,
) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    entry = location.entry
    if entry.sae.kind != "train" or entry.sae.train is None:
        raise dg.Failure(
            f"{location.model_key!r} layer {location.layer} is not trained by the platform: its SAE is "
            f"{location.describe()}. Materialize sae_decoder (and what follows) directly."
        )
    spec = entry.sae.train
    config, budget = with_budget(context, config, "trained_sae", entry, device.torch_device())
    try:
        dtype = compute_dtype(config.precision, device.torch_device())  # a bad value fails before any work
    except ValueError as err:
        raise dg.Failure(str(err)) from err
    lm, corpus_name, contexts = training_contexts(context, location, config, language_model, corpus)
    training = core_config(config, SaeTrainingConfig, architecture=spec.architecture, d_sae=spec.d_sae, k=spec.k,
                           training_samples=int(config.training_tokens * config.epochs))
    run = train_on_contexts(lm, contexts, location.hook_name, entry.language_model.hub_id, training,
                            config.training_tokens, config.lm_batch_size, device.torch_device(), context.log.info)
    metrics = run.metrics
    context.log.info("SAE %s layer %d: explained variance %.3f, L0 %.1f, dead %.1f%%", location.model_key,
                     location.layer, metrics.explained_variance, metrics.l0, 100 * metrics.dead_fraction)
    path = sae_source.store_trained(location, run.sae)
    row = trained_sae_row(path, location.hook_name, training, config.training_tokens, corpus_name, run)
    written = lake.write_partition("trained_sae", row, location.model_key, location.layer)
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), "budget_profile": budget, "precision": precision_name(dtype),
        **_metadata(run, row, config),
    })
