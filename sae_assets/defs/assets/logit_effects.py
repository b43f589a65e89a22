"""``logit_effects``: per SAE feature, the tokens its decoder direction promotes and suppresses through the
unembedding (decoder · W_U), top 10 each: Neuronpedia's logit tables."""

import re
import time
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import Field

from sae_assets.core.common.progress import Progress, heartbeat, tracked
from sae_assets.core.sae.decoder import decoder_matrix
from sae_assets.core.sae.logit_effects import (
    LOGIT_EFFECTS_SCHEMA,
    FinalNorm,
    LogitEffects,
    LogitEffectsConfig,
    compute_logit_effects,
    record_batches,
)
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.automation import on_new_inputs
from sae_assets.defs.executors import GPU_OP_TAGS, GPU_POOL
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, md_text, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource, ModelLoadError

PREVIEW_FEATURES = 8
PREVIEW_TOKENS = 5


class LogitEffectsRunConfig(dg.Config):
    """Defaults are :class:`LogitEffectsConfig`'s (see ``LOGIT_EFFECTS_CONFIG``)."""

    top_k: int = Field(default=LogitEffectsConfig.top_k, ge=1,
                       description="Promoted and suppressed tokens kept per feature.")
    final_norm: FinalNorm = Field(default=LogitEffectsConfig.final_norm, description="none: the raw unembedding "
                                  "(as Neuronpedia); fold: the final norm's weight folded into W_U (TransformerLens "
                                  "fold_ln; LayerNorm models also centre W_U over d_model).")
    unit_decoder: bool = Field(default=LogitEffectsConfig.unit_decoder,
                               description="Scale decoder rows to unit norm first (as Neuronpedia); ranks unchanged.")
    memory_budget_mib: int = Field(default=LogitEffectsConfig.memory_budget_mib, ge=1,
                                   description="Working memory of one block of features x vocabulary (MiB).")
    dtype: str | None = Field(default=None, description="Language-model dtype; default: the device resource's. "
                              "The products are float32 whatever the model's dtype.")

    def logit_effects_config(self) -> LogitEffectsConfig:
        return core_config(self, LogitEffectsConfig)


LOGIT_EFFECTS_CONFIG = ConfigPair(LogitEffectsRunConfig, LogitEffectsConfig,
                                  asset_only={"dtype": "loading the language model"})


def _token_cell(tokens: list[str], values: list[float]) -> str:
    """Tokens as text in a Markdown cell: no HTML, no emphasis or code spans, spaces shown as ␣."""
    shown = [md_text(re.sub(r"([\\`*_\[\]#~])", r"\\\1", t)).replace(" ", "␣") + f" ({v:+.2f})"
             for t, v in zip(tokens, values, strict=True)]
    return ", ".join(shown)


def _preview(effects: LogitEffects, features: np.ndarray, strings: dict[int, str]) -> str:
    """The features whose top promoted value is largest: their first promoted and suppressed tokens."""
    lines = ["| feature | promoted | suppressed |", "|---|---|---|"]
    top = effects.promoted_values[:, 0].numpy()
    for row in np.argsort(-top, kind="stable")[:PREVIEW_FEATURES]:
        cells = []
        for ids, values in ((effects.promoted_ids, effects.promoted_values),
                            (effects.suppressed_ids, effects.suppressed_values)):
            cells.append(_token_cell([strings[int(i)] for i in ids[row, :PREVIEW_TOKENS]],
                                     values[row, :PREVIEW_TOKENS].tolist()))
        lines.append(f"| {int(features[row])} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=[sae_decoder],
    kinds={"torch", "polars", "delta"},
    group_name="sae",
    owners=["team:interpretability"],
    code_version="1",
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    automation_condition=on_new_inputs(),
    description="Per feature: the top_k (10) output tokens its decoder direction promotes and suppresses most "
    "through the unembedding (decoder · W_U, decoder rows unit-norm; raw W_U as Neuronpedia, or final_norm: fold): "
    "promoted_ids / _tokens / _values, suppressed_ids / _tokens / _values. Computed a block of features at a time.",
)
def logit_effects(context: dg.AssetExecutionContext, config: LogitEffectsRunConfig, lake: LakeResource,
                  device: DeviceResource, language_model: LanguageModelResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    model, layer = location.model_key, location.layer
    upstream = StepInputs(lake, "logit_effects", model, layer)
    where = upstream.where
    decoder = upstream.decoder()
    w_dec = decoder_matrix(decoder)
    features = decoder["feature"].to_numpy()
    bad = int((~w_dec.isfinite().all(dim=1)).sum())
    if bad:
        raise dg.Failure(f"{where}: the decoder has NaN or Inf values in {bad} of {w_dec.shape[0]} rows.",
                         allow_retries=False)
    t0 = time.perf_counter()
    with heartbeat(context.log.info, where) as report:
        try:
            lm = language_model.load(location.entry.language_model, config.dtype)
        except ModelLoadError as err:
            raise dg.Failure(f"{where}: {err}") from err
        if w_dec.shape[1] != lm.d_model:
            raise dg.Failure(
                f"{where}: the decoder's d_in={w_dec.shape[1]} does not match {lm.name}'s d_model={lm.d_model}; "
                f"the catalog entry {model!r} names a language model its SAE was not trained on.",
                allow_retries=False)
        unembedding = lm.unembedding()
        try:
            effects = compute_logit_effects(w_dec, unembedding, config.logit_effects_config(),
                                            device=device.torch_device(), report=report)
        except ValueError as err:
            raise dg.Failure(f"{where}: {err}", allow_retries=False) from err
        report(f"{where}: {effects.promoted_ids.shape[0]} features x {effects.vocab} tokens in "
               f"{effects.n_blocks} blocks of {effects.block_features}, {effects.seconds:.1f}s; writing")
        ids = np.unique(np.concatenate([effects.promoted_ids.numpy().ravel(), effects.suppressed_ids.numpy().ravel()]))
        strings = dict(zip(ids.tolist(), lm.token_strings(ids.tolist()), strict=True))

        def batches() -> Iterator[pa.RecordBatch]:
            return tracked(record_batches(effects, features, lambda i: [strings[t] for t in i]),
                           Progress(f"{where} write", len(features), "features", report), lambda b: b.num_rows)

        written = lake.write_partition_batches("logit_effects", batches, LOGIT_EFFECTS_SCHEMA, model, layer)
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs),
        "seconds": round(time.perf_counter() - t0, 2),
        "compute_seconds": round(effects.seconds, 2),
        "peak_memory_bytes": dg.MetadataValue.int(effects.peak_bytes),
        "peak_memory_measure": effects.peak_measure,
        "vocab_size": effects.vocab,
        "top_k": int(effects.promoted_ids.shape[1]),
        "norm_handling": effects.norm_handling,
        "unit_decoder": config.unit_decoder,
        "block_features": effects.block_features,
        "n_blocks": effects.n_blocks,
        "preview": dg.MetadataValue.md(_preview(effects, features, strings)),
    })

