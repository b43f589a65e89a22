"""``sae_evals``: how good the partition's SAE is, by SAELens's core metrics on held-out corpus documents."""

import time

import dagster as dg
import numpy as np
from pydantic import Field
from sae_lens.util import get_special_token_ids

from sae_assets.catalog import SaeLocation
from sae_assets.core.common.plots import histogram_png
from sae_assets.core.common.progress import Report, heartbeat
from sae_assets.core.sae.eval_table import eval_row
from sae_assets.core.sae.evals import SaeEvals, evaluate_spliced, rows_per_batch
from sae_assets.core.sae.token_contexts import held_out_contexts
from sae_assets.core.scan.memory import free_bytes
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.automation import on_new_inputs
from sae_assets.defs.budgets import with_budget
from sae_assets.defs.executors import GPU_OP_TAGS, GPU_POOL
from sae_assets.defs.metadata import input_table_versions, png_markdown, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.resources.corpus import CorpusError, CorpusResource
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from sae_assets.resources.sae_source import SaeLoadError, SaeSourceResource

MIB = 1024**2


class SaeEvalsConfig(dg.Config):
    """The held-out tokens and how they are batched."""

    eval_tokens: int = Field(default=131_072, ge=256, description="Held-out tokens evaluated (BOS included), "
                             "packed into contexts from the corpus's last documents backwards.")
    context_size: int = Field(default=128, ge=8, description="Tokens per context, BOS first (SAELens evals use "
                              "the SAE's training context; the loss of later positions is a little lower).")
    max_batch_contexts: int = Field(default=32, ge=1, description="Contexts per forward at most.")
    memory_budget_mib: int = Field(default=2048, ge=64, description="Memory for the forwards' logits (five "
                                   "contexts x vocabulary float32 copies): fewer contexts per forward when the "
                                   "vocabulary is large (Gemma: 262k). On CUDA at most half the free memory.")
    dtype: str | None = Field(default=None, description="Language-model dtype; default: the device resource's.")


def run_evals(location: SaeLocation, config: SaeEvalsConfig, device: DeviceResource,
              language_model: LanguageModelResource, sae_source: SaeSourceResource, corpus: CorpusResource,
              report: Report) -> tuple[SaeEvals, dict]:
    """The evals of the partition's SAE and where its tokens came from. Raises SaeLoadError, CorpusError or
    ValueError (a hook or width mismatch, too small a corpus) before the first forward."""
    loaded = sae_source.load(location)
    documents = corpus.load()
    lm = language_model.load(location.entry.language_model, config.dtype)
    n_contexts = -(-config.eval_tokens // config.context_size)
    contexts, held_out_from = held_out_contexts(documents.documents, lm.tokenize, lm.bos_token_id,
                                                config.context_size, n_contexts)
    if held_out_from < len(documents) // 2:
        report(f"The held-out tokens reach document {held_out_from} of {len(documents)}: they may overlap the "
               "documents the SAE was trained on (the trainer reads from the corpus's start). Evaluate fewer "
               "tokens or use a larger corpus.")
    dev = device.torch_device()
    memory = config.memory_budget_mib * MIB
    if dev.type == "cuda":
        memory = min(memory, free_bytes(dev) // 2)
    rows = rows_per_batch(config.context_size, int(lm.model.cfg.d_vocab), memory, config.max_batch_contexts)
    report(f"Evaluating {location.hook_name} of {lm.name} ({loaded.d_sae:,} latents, {loaded.source}) on "
           f"{n_contexts} held-out contexts of {config.context_size} tokens, {rows} per forward")
    evals = evaluate_spliced(lm, loaded.sae, location.hook_name, contexts, rows,
                             sorted(get_special_token_ids(lm.tokenizer)), report)
    return evals, {"d_sae": loaded.d_sae, "n_contexts": n_contexts, "corpus": documents.name,
                   "held_out_from": held_out_from, "sae_source": loaded.source, "contexts_per_forward": rows}


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=[sae_decoder],
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"torch", "polars", "delta"},
    group_name="sae",
    owners=["team:interpretability"],
    automation_condition=on_new_inputs(),
    code_version="1",
    description="How good the partition's SAE is, with SAELens's definitions, on held-out corpus documents: "
    "explained variance, MSE, cosine, relative norm, L0 and its spread, dead and dense fractions, a log10 density "
    "histogram; with the SAE spliced in at its hook, CE loss (clean / with the SAE / hook zero-ablated), CE loss "
    "score, delta LM loss, KL divergence and KL score. One row per partition, with a verdict.",
)
def sae_evals(context: dg.AssetExecutionContext, config: SaeEvalsConfig, lake: LakeResource, device: DeviceResource,
              language_model: LanguageModelResource, sae_source: SaeSourceResource,
              corpus: CorpusResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    config, budget = with_budget(context, config, "sae_evals", location.entry, device.torch_device())
    model, layer = location.model_key, location.layer
    t0 = time.perf_counter()
    with heartbeat(context.log.info, f"sae_evals {model} layer {layer}") as report:
        try:
            evals, source = run_evals(location, config, device, language_model, sae_source, corpus, report)
        except (SaeLoadError, CorpusError, ValueError) as err:
            raise dg.Failure(f"sae_evals {model} layer {layer}: {err}") from err
    seconds = time.perf_counter() - t0
    row = eval_row(evals, location.hook_name, source["d_sae"], config.context_size, source["n_contexts"],
                   source["corpus"], source["held_out_from"], seconds)
    verdict = row["verdict"][0]
    (context.log.warning if evals.ce_loss_score < 0 else context.log.info)(f"sae_evals {model} layer {layer}: "
                                                                             f"{verdict}")
    written = lake.write_partition("sae_evals", row, model, layer)
    density = evals.feature_density.numpy()
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs),
        **{name: dg.MetadataValue.float(float(value)) for name, value in evals.scalars().items()
           if isinstance(value, float)},
        "n_tokens": evals.n_tokens, "verdict": verdict, "sae_source": source["sae_source"],
        "contexts_per_forward": source["contexts_per_forward"], "seconds": round(seconds, 1),
        "budget_profile": budget,
        "feature_density": png_markdown(
            histogram_png(np.log10(density[density > 0]), "Feature density on held-out tokens (live latents)",
                          "log10(density)"), "density histogram"),
    })
