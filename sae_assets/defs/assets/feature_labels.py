"""``feature_labels``: LLM and keyword labels from activating examples and Neuronpedia's explanations, each with
a held-out detection score; ``label`` is the best-scoring (``core/labels/choice.py``). The table and its exports
are built in ``core/labels/table.py``."""

from dataclasses import dataclass
from typing import IO

import dagster as dg
import numpy as np
import polars as pl
import torch
from pydantic import Field

from sae_assets.core.common.atomic_file import atomic_file, write_atomic
from sae_assets.core.common.precision import compute_dtype, precision_name
from sae_assets.core.common.progress import Report, heartbeat
from sae_assets.core.labels.blocks import AllLabelCallsFailed, BlockedLabels, LabelSettings, label_in_blocks
from sae_assets.core.labels.evidence import EVIDENCE_COLUMNS, read_selection
from sae_assets.core.labels.labelling import background_counts_series
from sae_assets.core.labels.table import example_lines, label_frame, labels_json, select_features, source_summary
from sae_assets.defs.assets.neuronpedia_explanations import neuronpedia_explanations
from sae_assets.defs.automation import on_new_inputs
from sae_assets.defs.budgets import with_budget
from sae_assets.defs.executors import GPU_OP_TAGS, GPU_POOL
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, md_text, table_metadata, viewer_link
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.embedder import EmbedderResource
from sae_assets.resources.labeller import LabellerResource
from sae_assets.resources.lake import LakeResource

EXAMPLES_FILE = "feature_examples.jsonl"
LABELS_FILE = "feature_labels.json"


class FeatureLabelsConfig(dg.Config):
    """Defaults of the fields shared with :class:`LabelSettings` are its defaults (see ``LABEL_CONFIG``)."""

    feature_indices: list[int] | None = Field(default=None,
                                              description="Features to label (default: all with examples).")
    features_file: str | None = Field(default=None, description='JSON {"feature_indices": [...], "scores": [...]}')
    max_features: int | None = Field(default=None, description="Label at most this many (after the selection).")
    n_shown: int = Field(default=LabelSettings.n_shown, description="Top-activating windows shown to the labeller.")
    n_holdout: int = Field(default=LabelSettings.n_holdout,
                           description="Held-out activating windows the label is scored on.")
    use_llm: bool = Field(default=LabelSettings.use_llm, description="False: keyword labels only.")
    llm_max_features: int | None = Field(default=LabelSettings.llm_max_features, description="LLM labels for at "
                                         "most this many features (the first of the selection); the others keep "
                                         "their keyword labels.")
    chunk: int = Field(default=LabelSettings.chunk,
                       description="Features per labeller call batch (progress is logged per chunk).")
    use_optimized_prompts: bool = Field(default=False, description="Also show the labeller this partition's "
                                        "optimized prompts (materialize optimized_prompts first).")
    llm_detection: bool = Field(default=LabelSettings.llm_detection, description="Also score labels with the "
                                "labeller as a detection judge (yes/no per held-out window; AUROC): one LLM call "
                                "per window.")
    use_neuronpedia: bool = Field(default=True, description="Score the partition's Neuronpedia explanations "
                                  "(neuronpedia_explanations, where materialized) as label candidates too.")
    precision: str = Field(default="float32", description="Matmul precision of the local labeller and the "
                           "detection embedder: float32 (the reference), bfloat16 (autocast: bf16 products "
                           "accumulated in float32; embeddings returned as float32), or auto (bfloat16 where the "
                           "device multiplies bf16 natively: CUDA, or a CPU with AVX-512 BF16 / AMX; else "
                           "float32). The cpu budget profile sets auto.")


LABEL_CONFIG = ConfigPair(
    FeatureLabelsConfig, LabelSettings,
    asset_only={"feature_indices": "feature selection", "features_file": "feature selection (a JSON file)",
                "max_features": "feature selection",
                "use_optimized_prompts": "whether the asset reads the optimized_prompts table",
                "use_neuronpedia": "whether the asset reads the neuronpedia_explanations table",
                "precision": "how the resources run their models (the core gets the chat client and encode)"},
    core_only={"max_new_tokens": "the labeller resource's (a property of the labelling model)"},
)


@dataclass(frozen=True)
class LabelInputs:
    """What one partition's labelling reads: its example windows, the features to label (and their selection
    scores), optimized prompts (None: not asked for) and Neuronpedia's explanations by feature."""

    examples: pl.DataFrame
    indices: list[int]
    selection_scores: list[float] | None
    prompts: pl.DataFrame | None
    candidates: dict[int, list[str]]


def read_label_inputs(context: dg.AssetExecutionContext, config: FeatureLabelsConfig,
                      upstream: StepInputs) -> LabelInputs:
    """The partition's :class:`LabelInputs`; fails on a bad selection or a missing input."""
    try:
        indices, selection_scores = read_selection(config.feature_indices, config.features_file)
        examples = upstream.read("activation_examples", EVIDENCE_COLUMNS)
        indices = select_features(indices, examples, upstream.d_sae(), config.max_features)
    except ValueError as err:
        raise dg.Failure(str(err)) from err
    prompts = (upstream.scan("optimized_prompts", or_else="unset use_optimized_prompts")
               .select("feature", "tokens", "position_activations").collect() if config.use_optimized_prompts
               else None)
    candidates = _neuronpedia_candidates(context, upstream) if config.use_neuronpedia else {}
    return LabelInputs(examples, indices, selection_scores, prompts, candidates)


def _neuronpedia_candidates(context: dg.AssetExecutionContext, upstream: StepInputs) -> dict[int, list[str]]:
    """Feature -> its distinct Neuronpedia explanations ({} where neuronpedia_explanations lacks the partition)."""
    lazy = upstream.optional("neuronpedia_explanations")
    if lazy is None:
        context.log.info("No neuronpedia_explanations table: labelling without Neuronpedia candidates")
        return {}
    rows = (lazy.select("feature", "description")
            .filter(pl.col("description").str.strip_chars() != "").unique(maintain_order=True)
            .group_by("feature", maintain_order=True).agg("description").collect())
    return dict(zip(rows["feature"].to_list(), rows["description"].to_list(), strict=True))


def run_labelling(got: LabelInputs, config: FeatureLabelsConfig, labeller: LabellerResource,
                  embedder: EmbedderResource, dtype: torch.dtype, report: Report,
                  examples_out: IO[str]) -> BlockedLabels:
    """Label ``got.indices`` with the resources' models at ``dtype``; each block's shown windows go to
    ``examples_out`` as ``feature_examples.jsonl`` lines."""
    background = background_counts_series(got.examples["tokens"])
    report(f"{got.examples.height:,} example windows read, {len(background):,} distinct background tokens; "
           f"labelling {len(got.indices):,} features ({len(got.candidates):,} with Neuronpedia explanations)")
    report(f"precision {config.precision}: {precision_name(dtype)}")
    chat = labeller.client(dtype) if config.use_llm or config.llm_detection else None
    encode = embedder.encoder(dtype)  # with the embedder's token lengths, to batch windows by length
    settings = core_config(config, LabelSettings, max_new_tokens=labeller.max_new_tokens)
    return label_in_blocks(got.examples, got.indices, background, chat, encode, settings, got.prompts, report,
                           on_block=lambda block, evidence: examples_out.writelines(example_lines(block, evidence)),
                           explanations=got.candidates)


def _fmt(score: float | None) -> str:
    return "" if score is None else f"{score:.2f}"


def _preview(frame: pl.DataFrame, n: int = 15) -> str:
    lines = ["| feature | label | source | score | LLM | keywords | Neuronpedia |", "|---|---|---|---|---|---|---|"]
    for r in frame.head(n).iter_rows(named=True):
        lines.append(f"| {r['feature']} | {md_text(r['label'])} | {r['label_source'] or ''} | {_fmt(r['score'])} | "
                     f"{_fmt(r['score_llm'])} | {_fmt(r['score_keywords'])} | {_fmt(r['score_explanation'])} |")
    return "\n".join(lines)


def _run_metadata(frame: pl.DataFrame, run: BlockedLabels, labeller_model: str | None) -> dict:
    """The labelling run's figures: scores by source, detection, LLM errors and pace, the preview table."""
    valid = [s for s in run.scores.values() if np.isfinite(s)]
    detection, llm = run.detection, run.llm
    return {
        "mean_score": float(np.mean(valid)) if valid else float("nan"),  # of the shown labels
        **source_summary(frame),
        "mean_score_llm_detection": float(np.nanmean(list(detection.values()))) if detection else float("nan"),
        "features_labelled": frame.height,
        "optimized_prompts_shown": run.prompts_added,
        "windows_embedded": run.texts_embedded,
        "llm_errors": sum(1 for _, err in llm.values() if err),
        "labels_per_second": round(len(llm) / run.llm_seconds, 2) if llm else 0.0,
        "labeller_model": labeller_model or "none (keywords only)",
        "preview": dg.MetadataValue.md(_preview(frame)),
    }


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=["sae_decoder", "activation_examples", neuronpedia_explanations],
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"torch", "polars", "delta"},
    group_name="labels",
    code_version="1",
    owners=["team:interpretability"],
    automation_condition=on_new_inputs(),
    description="Per feature: an LLM label (under 10 words) from its top windows, a keyword label (log-odds of "
    "activating tokens vs all windows) and Neuronpedia's explanations where the partition has them, each with a "
    "detection score (embedding AUROC on the same held-out windows); label is the best-scoring candidate.",
)
def feature_labels(context: dg.AssetExecutionContext, config: FeatureLabelsConfig, lake: LakeResource,
                   labeller: LabellerResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    model, layer = location.model_key, location.layer
    config, budget = with_budget(context, config, "feature_labels", location.entry, labeller.device.torch_device())
    got = read_label_inputs(context, config, StepInputs(lake, "feature_labels", model, layer))
    try:
        dtype = compute_dtype(config.precision, labeller.device.torch_device())
    except ValueError as err:
        raise dg.Failure(str(err)) from err
    labeller_model = labeller.model if config.use_llm else None
    export_dir = lake.local_dir("exports", "feature_labels", model, f"layer-{layer}")
    try:
        # Loading the labeller, a batch of LLM generations or of embeddings can each take longer than 10 s. The
        # examples export is published when the table is written; a failure leaves the previous one.
        with heartbeat(context.log.info, f"feature_labels {model} layer {layer}") as report, \
                atomic_file(export_dir / EXAMPLES_FILE) as examples_out:
            run = run_labelling(got, config, labeller, embedder, dtype, report, examples_out)
            frame = label_frame(got.indices, run, labeller_model, got.selection_scores)
            written = lake.write_partition("feature_labels", frame, model, layer)
    except AllLabelCallsFailed as err:
        raise dg.Failure(str(err)) from err
    if got.prompts is not None:
        context.log.info("Added %d optimized prompts to the labeller's evidence", run.prompts_added)
    labels_path = write_atomic(export_dir / LABELS_FILE, labels_json(frame))
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs), **_run_metadata(frame, run, labeller_model),
        "budget_profile": budget, "precision": precision_name(dtype),
        "viewer": viewer_link(model, layer),  # python -m sae_assets.viewer: the map, each feature's page
        "feature_examples_jsonl": dg.MetadataValue.path(str(export_dir / EXAMPLES_FILE)),
        "feature_labels_json": dg.MetadataValue.path(str(labels_path)),
    })
