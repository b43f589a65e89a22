"""``activation_scan``: one LM + SAE pass over the corpus -> feature_stats, activation_examples, cooccurrence,
feature_profiles."""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from sae_assets.catalog import SaeLocation
from sae_assets.core.common.language_model import LanguageModel
from sae_assets.core.common.plots import histogram_png
from sae_assets.core.common.progress import Progress, Report, heartbeat, tracked
from sae_assets.core.scan.activation_examples import ExampleConfig
from sae_assets.core.scan.activation_scan import ScanConfig, ScanResult, run_scan
from sae_assets.core.scan.cooccurrence import COOCCURRENCE_SCHEMA
from sae_assets.core.scan.memory import GIB, check_scan_memory, free_bytes
from sae_assets.core.scan.scan_identity import SCAN_ID, new_scan_id, with_scan_id, with_scan_id_schema
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.automation import on_new_inputs
from sae_assets.defs.budgets import with_budget
from sae_assets.defs.executors import GPU_OP_TAGS, GPU_POOL
from sae_assets.defs.metadata import input_table_versions, md_text, png_markdown, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.corpus import CorpusError, CorpusResource
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from sae_assets.resources.sae_source import SaeLoadError, SaeSourceResource
from sae_assets.storage.delta import WriteResult


class ActivationScanConfig(dg.Config):
    """Defaults of the fields shared with :class:`ScanConfig` and :class:`ExampleConfig` are theirs."""

    max_tokens: int | None = Field(default=262_144, description="Stop after this many tokens (None: whole corpus).")
    max_documents: int | None = Field(default=None, description="Stop after this many documents.")
    context_size: int = Field(default=ScanConfig.context_size,
                              description="Tokens per document, BOS included (SFAL: 1,024).")
    window: int = Field(default=ScanConfig.window, description="Co-occurrence window k in tokens (SFAL: 256).")
    batch_tokens: int = Field(default=ScanConfig.batch_tokens,
                              description="Padded tokens per forward; halves on CUDA OOM.")
    dtype: str | None = Field(default=None, description="Language-model dtype; default: the device resource's.")
    activation_threshold: float = Field(default=ScanConfig.activation_threshold,
                                        description="A feature is active on a token when its activation exceeds this.")
    top_k: int = Field(default=ExampleConfig.top_k, description="Top-activating documents kept per feature.")
    n_quantiles: int = Field(default=ExampleConfig.n_quantiles, description="Activation bins for quantile examples.")
    per_quantile: int = Field(default=ExampleConfig.per_quantile, description="Examples drawn from each quantile bin.")
    reservoir: int = Field(default=ExampleConfig.reservoir,
                           description="Activating documents sampled per feature for quantiles.")
    n_random: int = Field(default=ExampleConfig.n_random, description="Random windows shared by all features.")
    radius: int = Field(default=ExampleConfig.radius, description="Tokens kept on each side of an example's peak.")
    profile_documents: int = Field(default=ScanConfig.profile_documents, ge=1, description="Documents (the corpus's "
                                   "first) whose per-feature activation mass is stored in feature_profiles (for "
                                   "clustering).")
    seed: int = Field(default=ScanConfig.seed, description="Seeds the example sampling and the tokens the SAE's "
                      "reconstruction is measured on.")

    def scan_config(self) -> ScanConfig:
        return core_config(self, ScanConfig, examples=core_config(self, ExampleConfig))


SCAN_CONFIG = ConfigPair(
    ActivationScanConfig, ScanConfig,
    asset_only={"max_tokens": "the corpus budget: the asset stops reading documents",
                "max_documents": "the corpus budget: the asset stops reading documents",
                "dtype": "loading the language model"},
    core_only={"examples": "built from the asset's ExampleConfig fields (EXAMPLE_CONFIG)",
               "reconstruction_sample": "sampling of the explained-variance estimate, not a run budget",
               "chunk_documents": "read-ahead of the length sort, a throughput detail"},
)
EXAMPLE_CONFIG = ConfigPair(ActivationScanConfig, ExampleConfig)


def _documents(lm: LanguageModel, texts: tuple[str, ...],
               config: ActivationScanConfig) -> Iterator[tuple[int, list[int]]]:
    """(doc_index, [BOS, ...]) truncated to the context, lazily, within the token/document budget."""
    tokens = 0
    for index, text in enumerate(texts):
        if config.max_documents is not None and index >= config.max_documents:
            return
        if config.max_tokens is not None and tokens >= config.max_tokens:
            return
        ids = [lm.bos_token_id, *lm.tokenize(text)][: config.context_size]
        tokens += len(ids)
        yield index, ids


def _examples_preview(result: ScanResult, n_features: int = 8) -> str:
    top = result.examples.filter((pl.col("kind") == "top") & (pl.col("rank") == 0))
    dense = result.feature_stats.sort("n_tokens_active", descending=True).head(n_features)["feature"]
    lines = ["| feature | max act | top example (peak in **bold**) |", "|---|---|---|"]
    for row in top.filter(pl.col("feature").is_in(dense)).sort("feature").iter_rows(named=True):
        peak = row["token_position"] - row["window_start"]
        words = [md_text(t) for t in row["tokens"]]
        if 0 <= peak < len(words):
            words[peak] = f"**{words[peak]}**"
        lines.append(f"| {row['feature']} | {row['activation']:.2f} | {''.join(words)} |")
    return "\n".join(lines)


def scan_corpus(location: SaeLocation, config: ActivationScanConfig, device: DeviceResource,
                language_model: LanguageModelResource, sae_source: SaeSourceResource, corpus: CorpusResource,
                report: Report) -> tuple[ScanResult, int]:
    """The partition's SAE run over the corpus within ``config``'s budget: the scan and the SAE's width. Raises
    SaeLoadError, CorpusError or ValueError (a hook or width mismatch, too little memory) before scanning."""
    loaded = sae_source.load(location)
    texts = corpus.load().documents
    lm = language_model.load(location.entry.language_model, config.dtype)
    lm.check_hook(location.hook_name)
    if loaded.d_in != lm.d_model:
        raise ValueError(f"SAE d_in={loaded.d_in} does not match {lm.name}'s hook width {lm.d_model}.")
    dev, scan_config = device.torch_device(), config.scan_config()
    need = check_scan_memory(loaded.d_sae, scan_config, free_bytes(dev), str(dev))
    report(f"Scan of {loaded.d_sae} latents will hold about {need.total / GIB:.1f} GiB on {dev} "
           f"({need.describe()})")
    expected = config.max_tokens or len(texts) * config.context_size
    result = run_scan(lm, location.hook_name, loaded.sae, _documents(lm, texts, config), expected,
                      lm.bos_token_id, scan_config, dev, lm.token_strings, report)
    return result, loaded.d_sae


def write_scan_tables(lake: LakeResource, result: ScanResult, model: str, layer: int,
                      report: Report) -> tuple[str, dict[str, WriteResult]]:
    """The four tables written, every row naming one new scan id (so the check same_scan can tell when a crash
    left them mixed): the id and each table's write."""
    scan_id = new_scan_id()
    written = {name: lake.write_partition(name, frame.with_columns(pl.lit(scan_id).alias(SCAN_ID)), model, layer)
               for name, frame in (("feature_stats", result.feature_stats),
                                   ("activation_examples", result.examples),
                                   ("feature_profiles", result.profiles))}
    # One row per feature holding its partners and counts, written a block of rows at a time.
    cooc = result.cooccurrence
    written["cooccurrence"] = lake.write_partition_batches(
        "cooccurrence", lambda: with_scan_id(tracked(cooc.record_batches(),
                                                     Progress("cooccurrence write", cooc.d_sae, "features", report),
                                                     lambda b: b.num_rows), scan_id),
        with_scan_id_schema(COOCCURRENCE_SCHEMA), model, layer)
    return scan_id, written


def scan_materializations(result: ScanResult, written: dict[str, WriteResult], inputs: dict[str, int | None],
                          scan_meta: dict[str, Any], window: int, d_sae: int) -> Iterator[dg.MaterializeResult]:
    """One MaterializeResult per table: ``scan_meta`` on feature_stats (its scan id on each), and each table's
    own figures."""
    scan_id = scan_meta[SCAN_ID]
    rec = result.reconstruction
    density = result.feature_stats["density"].to_numpy()
    yield dg.MaterializeResult(asset_key="feature_stats", metadata={
        **table_metadata(written["feature_stats"], inputs), **scan_meta,
        "explained_variance": float(rec.explained_variance), "l0": float(rec.l0),
        "dead_fraction": float(rec.dead_fraction),
        "density_histogram": png_markdown(histogram_png(np.log10(density + 1e-7), "Feature density",
                                                         "log10(density)"), "density histogram"),
    })
    kinds = dict(result.examples.group_by("kind").len().iter_rows())
    yield dg.MaterializeResult(asset_key="activation_examples", metadata={
        **table_metadata(written["activation_examples"], inputs), SCAN_ID: scan_id,
        **{f"rows_{k}": int(v) for k, v in kinds.items()},
        "preview": dg.MetadataValue.md(_examples_preview(result)),
    })
    pairs = result.cooccurrence.n_pairs()
    yield dg.MaterializeResult(asset_key="cooccurrence", metadata={
        **table_metadata(written["cooccurrence"], inputs), SCAN_ID: scan_id, "n_windows": result.n_windows,
        "window": window,
        "documents_with_a_window": result.n_docs_with_window,
        "co_occurring_pairs": pairs, "pair_fill": pairs / max(1, d_sae * (d_sae - 1) // 2),
    })
    yield dg.MaterializeResult(asset_key="feature_profiles", metadata={
        **table_metadata(written["feature_profiles"], inputs), SCAN_ID: scan_id,
        "profile_documents": len(result.profile_documents),
        "features_with_mass": int(result.profiles["profile"].list.sum().gt(0).sum()),
    })


@dg.multi_asset(
    specs=[
        dg.AssetSpec("feature_stats", deps=[sae_decoder], kinds={"torch", "polars", "delta"},
                     automation_condition=on_new_inputs(), owners=["team:interpretability"],
                     description="Per feature: active tokens, density, mean/max activation, entropy of activation "
                     "mass over documents, documents active; the SAE's explained variance and L0 in metadata."),
        dg.AssetSpec("activation_examples", deps=[sae_decoder], kinds={"torch", "polars", "delta"},
                     automation_condition=on_new_inputs(), owners=["team:interpretability"],
                     description="Per feature: top-k, quantile-sampled and random windows with token strings and "
                     "per-token activations."),
        dg.AssetSpec("cooccurrence", deps=[sae_decoder], kinds={"torch", "polars", "delta"},
                     automation_condition=on_new_inputs(), owners=["team:interpretability"],
                     description="Feature co-occurrence over non-overlapping k-token windows (SFAL), one row per "
                     "feature: marginal (windows where it fires), partners and counts (every feature it shares a "
                     "window with, ascending), n_windows."),
        dg.AssetSpec("feature_profiles", deps=[sae_decoder], kinds={"torch", "polars", "delta"},
                     automation_condition=on_new_inputs(), owners=["team:interpretability"],
                     description="Per feature: its activation mass in each of the corpus's first documents "
                     "(profile, list<float32>), the representation feature_clusters clusters by default."),
    ],
    partitions_def=model_layer_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    group_name="scan",
    code_version="1",
    can_subset=False,
)
def activation_scan(
    context: dg.AssetExecutionContext,
    config: ActivationScanConfig,
    lake: LakeResource,
    device: DeviceResource,
    language_model: LanguageModelResource,
    sae_source: SaeSourceResource,
    corpus: CorpusResource,
) -> Iterator[dg.MaterializeResult]:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    config, budget = with_budget(context, config, "activation_scan", location.entry, device.torch_device())
    model, layer = location.model_key, location.layer
    # The heartbeat repeats the last message when a stretch (model load, table writes) is quiet for 9 s.
    with heartbeat(context.log.info, f"activation_scan {model} layer {layer}") as report:
        try:
            result, d_sae = scan_corpus(location, config, device, language_model, sae_source, corpus, report)
        except (SaeLoadError, CorpusError, ValueError) as err:
            raise dg.Failure(f"activation_scan {model} layer {layer}: {err}") from err
        rec = result.reconstruction
        report(f"Scanned {result.n_documents} documents, {rec.n_tokens} tokens in {result.seconds:.0f}s: EV "
               f"{rec.explained_variance:.3f}, L0 {rec.l0:.1f}, dead {100 * rec.dead_fraction:.1f}%, "
               f"{result.n_windows} windows; writing the four tables")
        t0 = time.perf_counter()
        scan_id, written = write_scan_tables(lake, result, model, layer, report)
    scan_meta: dict[str, Any] = {"tokens_scanned": rec.n_tokens, "documents": result.n_documents,
                                 "scan_seconds": round(result.seconds, 1),
                                 "write_seconds": round(time.perf_counter() - t0, 1),
                                 "tokens_per_second": round(rec.n_tokens / max(result.seconds, 1e-9), 1),
                                 "batch_tokens": result.batch_tokens, "corpus": corpus.dataset,
                                 "budget_profile": budget, SCAN_ID: scan_id}
    yield from scan_materializations(result, written, inputs, scan_meta, config.window, d_sae)
