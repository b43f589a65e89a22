"""``feature_labels``: LLM and keyword labels from activating examples and Neuronpedia's explanations, each with
a held-out detection score; ``label`` is the best-scoring (``core/labels/choice.py``)."""

import json
import os
from typing import TextIO

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from sae_assets.core.common.precision import compute_dtype, precision_name
from sae_assets.core.common.progress import heartbeat
from sae_assets.core.labels.blocks import AllLabelCallsFailed, LabelSettings, label_in_blocks
from sae_assets.core.labels.choice import PRECEDENCE
from sae_assets.core.labels.evidence import EVIDENCE_COLUMNS, FeatureEvidence, read_selection
from sae_assets.core.labels.labelling import background_counts_series
from sae_assets.defs.assets.neuronpedia_explanations import neuronpedia_explanations
from sae_assets.defs.automation import on_new_inputs
from sae_assets.defs.budgets import with_budget
from sae_assets.defs.executors import GPU_OP_TAGS, GPU_POOL
from sae_assets.defs.metadata import input_table_versions, md_text, table_metadata, viewer_link
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.embedder import EmbedderResource
from sae_assets.resources.labeller import LabellerResource
from sae_assets.resources.lake import LakeResource

SCORE_METHOD = "embedding-auroc"
LABEL_SCHEMA = {
    "feature": pl.Int32, "label": pl.String, "label_source": pl.String, "score": pl.Float64,
    "label_llm": pl.String, "score_llm": pl.Float64, "label_keywords": pl.String, "score_keywords": pl.Float64,
    "label_explanation": pl.String, "score_explanation": pl.Float64, "score_method": pl.String,
    "score_llm_detection": pl.Float64, "n_examples": pl.Int32, "labeller_model": pl.String,
    "selection_score": pl.Float64, "error": pl.String,
}


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


def _export_examples(out: TextIO, features: list[int], evidence: dict[int, FeatureEvidence]) -> None:
    """The seed's feature_examples.jsonl lines: each feature's shown windows."""
    for f in features:
        out.write(json.dumps({"feature_index": f, "examples": [
            {"text": w.text(), "tokens": list(w.tokens), "activations": list(w.activations),
             "max_activation": max(w.activations, default=0.0)} for w in evidence[f].shown]}) + "\n")


def _neuronpedia_candidates(context: dg.AssetExecutionContext, lake: LakeResource, model: str,
                            layer: int) -> dict[int, list[str]]:
    """Feature -> its distinct Neuronpedia explanations ({} where neuronpedia_explanations lacks the partition)."""
    if lake.missing_tables("neuronpedia_explanations"):
        context.log.info("No neuronpedia_explanations table: labelling without Neuronpedia candidates")
        return {}
    rows = (lake.scan_partition("neuronpedia_explanations", model, layer).select("feature", "description")
            .filter(pl.col("description").str.strip_chars() != "").unique(maintain_order=True)
            .group_by("feature", maintain_order=True).agg("description").collect())
    return dict(zip(rows["feature"].to_list(), rows["description"].to_list(), strict=True))


def _fmt(score: float | None) -> str:
    return "" if score is None else f"{score:.2f}"


def _preview(frame: pl.DataFrame, n: int = 15) -> str:
    lines = ["| feature | label | source | score | LLM | keywords | Neuronpedia |", "|---|---|---|---|---|---|---|"]
    for r in frame.head(n).iter_rows(named=True):
        lines.append(f"| {r['feature']} | {md_text(r['label'])} | {r['label_source'] or ''} | {_fmt(r['score'])} | "
                     f"{_fmt(r['score_llm'])} | {_fmt(r['score_keywords'])} | {_fmt(r['score_explanation'])} |")
    return "\n".join(lines)


def _source_metadata(frame: pl.DataFrame) -> dict[str, float | int]:
    """How often each candidate source won, and each source's mean score over the features it has a score for."""
    out: dict[str, float | int] = {}
    for source in PRECEDENCE:
        out[f"wins_{source}"] = int((frame["label_source"] == source).sum())
        mean = frame[f"score_{source}"].drop_nulls().drop_nans().mean()
        out[f"mean_score_{source}"] = float("nan") if mean is None else float(mean)  # type: ignore[arg-type]
    return out


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=["activation_examples", neuronpedia_explanations],
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
    try:
        indices, selection_scores = read_selection(config.feature_indices, config.features_file)
    except ValueError as err:
        raise dg.Failure(str(err)) from err
    missing = lake.missing_tables("activation_examples", "feature_stats")
    examples = (pl.DataFrame() if missing else lake.scan_partition("activation_examples", model, layer)
                .select(EVIDENCE_COLUMNS).collect())
    if examples.is_empty():
        raise dg.Failure(f"No activation_examples for {model} layer {layer}: materialize activation_scan first.")
    d_sae = lake.scan_partition("feature_stats", model, layer).select(pl.len()).collect().item()
    if indices is None:
        indices = sorted(examples.filter(pl.col("kind") == "top")["feature"].unique().to_list())
    bad = [i for i in indices if not 0 <= i < d_sae]
    if bad:
        more = " ..." if len(bad) > 10 else ""
        raise dg.Failure(f"Feature indices outside the SAE (d_sae={d_sae}): {bad[:10]}{more}")
    if config.max_features is not None:
        indices = indices[: config.max_features]
    prompts = None
    if config.use_optimized_prompts:
        if lake.missing_tables("optimized_prompts"):
            raise dg.Failure("use_optimized_prompts is set but there is no optimized_prompts table: "
                             "materialize optimized_prompts first.")
        prompts = (lake.scan_partition("optimized_prompts", model, layer)
                   .select("feature", "tokens", "position_activations").collect())
    candidates = _neuronpedia_candidates(context, lake, model, layer) if config.use_neuronpedia else {}
    settings = core_config(config, LabelSettings, max_new_tokens=labeller.max_new_tokens)
    try:
        dtype = compute_dtype(config.precision, labeller.device.torch_device())
    except ValueError as err:
        raise dg.Failure(str(err)) from err
    export_dir = lake.local_dir("exports", "feature_labels", model, f"layer-{layer}")
    staged = export_dir / f".feature_examples.jsonl.{os.getpid()}.tmp"
    try:
        # Loading the labeller, a batch of LLM generations or of embeddings can each take longer than 10 s.
        with heartbeat(context.log.info, f"feature_labels {model} layer {layer}") as report, \
                open(staged, "w") as examples_out:
            background = background_counts_series(examples["tokens"])
            report(f"{examples.height:,} example windows read, {len(background):,} distinct background tokens; "
                   f"labelling {len(indices):,} features ({len(candidates):,} with Neuronpedia explanations)")
            report(f"precision {config.precision}: {precision_name(dtype)}")
            chat = labeller.client(dtype) if config.use_llm or config.llm_detection else None
            encode = embedder.encoder(dtype)  # with the embedder's token lengths, to batch windows by length
            run = label_in_blocks(examples, indices, background, chat, encode, settings, prompts, report,
                                  on_block=lambda block, evidence: _export_examples(examples_out, block, evidence),
                                  explanations=candidates)
        labeller_model = labeller.model if config.use_llm else None
        llm, choices, keywords = run.llm, run.choices, run.keywords

        def error(f: int) -> str | None:
            if not run.n_shown[f]:
                return "no activating examples"
            if choices[f].label is None and llm.get(f, (None, None))[1] is None:
                return ("no label: not sent to the LLM (use_llm / llm_max_features) and no activating token has a "
                        "letter or digit for a keyword label")
            return llm.get(f, (None, None))[1]

        explained = run.explanations
        frame = pl.DataFrame({
            "feature": indices,
            "label": [choices[f].label for f in indices],
            "label_source": [choices[f].source for f in indices],  # the rule: core/labels/choice.py
            "score": [choices[f].score for f in indices],
            "label_llm": [llm.get(f, (None, None))[0] for f in indices],
            "score_llm": [run.llm_scores.get(f) for f in indices],
            "label_keywords": [keywords[f] or None for f in indices],
            "score_keywords": [run.keyword_scores.get(f) for f in indices],
            "label_explanation": [explained.get(f, (None, None))[0] for f in indices],
            "score_explanation": [explained.get(f, (None, None))[1] for f in indices],
            "score_method": [SCORE_METHOD if choices[f].score is not None else None for f in indices],
            "score_llm_detection": [run.detection.get(f) for f in indices],
            "n_examples": [run.n_shown[f] for f in indices],
            "labeller_model": [labeller_model] * len(indices),
            "selection_score": selection_scores[: len(indices)] if selection_scores else [None] * len(indices),
            "error": [error(f) for f in indices],
        }, schema=LABEL_SCHEMA)  # explicit: a column that is all null in one partition keeps its type
        written = lake.write_partition("feature_labels", frame, model, layer)
        os.replace(staged, export_dir / "feature_examples.jsonl")
    except AllLabelCallsFailed as err:
        raise dg.Failure(str(err)) from err
    finally:
        staged.unlink(missing_ok=True)
    if prompts is not None:
        context.log.info("Added %d optimized prompts to the labeller's evidence", run.prompts_added)
    (export_dir / "feature_labels.json").write_text(json.dumps(
        [{"feature_index": r["feature"], "llm_label": r["label_llm"], "search_label": r["label_keywords"],
          "explanation": r["label_explanation"], "label": r["label"], "label_source": r["label_source"],
          "score": r["score"], "score_llm": r["score_llm"], "score_keywords": r["score_keywords"],
          "score_explanation": r["score_explanation"], "error": r["error"]} for r in frame.iter_rows(named=True)],
        indent=1))
    valid = [s for s in run.scores.values() if np.isfinite(s)]
    detection = run.detection
    return dg.MaterializeResult(metadata={
        **table_metadata(written, inputs),
        "mean_score": float(np.mean(valid)) if valid else float("nan"),  # of the shown labels
        **_source_metadata(frame),
        "mean_score_llm_detection": float(np.nanmean(list(detection.values()))) if detection else float("nan"),
        "features_labelled": len(indices),
        "budget_profile": budget,
        "precision": precision_name(dtype),
        "viewer": viewer_link(model, layer),  # python -m sae_assets.viewer: the map, each feature's page
        "optimized_prompts_shown": run.prompts_added,
        "windows_embedded": run.texts_embedded,
        "llm_errors": sum(1 for _, err in llm.values() if err),
        "labels_per_second": round(len(llm) / run.llm_seconds, 2) if llm else 0.0,
        "labeller_model": labeller_model or "none (keywords only)",
        "feature_examples_jsonl": dg.MetadataValue.path(str(export_dir / "feature_examples.jsonl")),
        "feature_labels_json": dg.MetadataValue.path(str(export_dir / "feature_labels.json")),
        "preview": dg.MetadataValue.md(_preview(frame)),
    })
