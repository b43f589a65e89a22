"""``optimized_prompts``: token sequences optimized to maximally activate the selected target features."""

import time
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from sae_assets.core.common.plots import lines_png
from sae_assets.core.common.precision import compute_dtype, precision_name
from sae_assets.core.common.progress import heartbeat
from sae_assets.core.common.token_heatmap import token_heatmap_png
from sae_assets.core.prompts.optimize import PromptOptConfig, optimize_features
from sae_assets.core.prompts.seeds import example_prompt
from sae_assets.core.prompts.table import method_summary, prompts_frame
from sae_assets.defs.assets.feature_clusters import feature_clusters
from sae_assets.defs.automation import on_new_inputs
from sae_assets.defs.budgets import with_budget
from sae_assets.defs.executors import GPU_OP_TAGS, GPU_POOL
from sae_assets.defs.inputs import StepInputs
from sae_assets.defs.metadata import input_table_versions, png_markdown, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.defs.run_config import ConfigPair, core_config
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from sae_assets.resources.sae_source import SaeLoadError, SaeSourceResource


class OptimizedPromptsConfig(dg.Config):
    """Defaults of the fields shared with :class:`PromptOptConfig` are its defaults (see ``PROMPT_CONFIG``)."""

    feature_indices: list[int] | None = Field(default=None, description="Targets (default: feature_clusters' "
                                              "selected features).")
    max_features: int | None = Field(default=None, description="Optimize at most this many targets.")
    init: Literal["top_example", "random"] = Field(
        default="top_example", description="Where the discrete search starts: top_example: the prompt-length "
        "tokens of the feature's top dataset example ending at its peak (random tokens where the example has "
        "fewer); random: random tokens.")
    methods: list[str] = Field(
        default=["discrete", "continuous"], description="discrete: GCG/EPO token swaps; continuous: the seed's "
        "embedding optimization projected to the nearest tokens.")
    length: int = Field(default=PromptOptConfig.length, description="Prompt tokens (BOS not counted).")
    max_steps: int = Field(default=PromptOptConfig.max_steps, description="Discrete optimization steps.")
    top_k: int = Field(default=PromptOptConfig.top_k, description="Candidate tokens per position (gradient top-k).")
    batch_size: int = Field(default=PromptOptConfig.batch_size,
                            description="Candidate swaps evaluated per step (halves on CUDA OOM).")
    fluency_weight: float = Field(default=PromptOptConfig.fluency_weight,
                                  description="EPO: objective = activation - weight * prompt CE.")
    position: Literal["last", "any"] = Field(default=PromptOptConfig.position,
                                             description="Activation at the last token, or max.")
    patience: int = Field(default=PromptOptConfig.patience,
                          description="Early stop after this many steps without improvement.")
    restarts: int = Field(default=PromptOptConfig.restarts, description="Discrete: random restarts when the "
                          "search plateaus with steps left (the best prompt is kept).")
    continuous_steps: int = Field(default=PromptOptConfig.continuous_steps,
                                  description="Adam steps of the continuous method.")
    lr: float = Field(default=PromptOptConfig.lr,
                      description="Continuous: Adam learning rate (relative to embedding norm).")
    projection: Literal["cosine", "l2"] = Field(default=PromptOptConfig.projection, description="Continuous: "
                                                "nearest token embedding by cosine similarity or L2 distance.")
    dtype: str | None = Field(default=None, description="Language-model dtype; default: the device resource's.")
    precision: str = Field(default=PromptOptConfig.precision, description="Matmul precision of the search's "
                           "forwards and gradients: float32, bfloat16 (autocast) or auto (bf16 where the device "
                           "multiplies it natively); the reported activation and cross-entropy come from a float32 "
                           "forward either way.")
    heatmaps: int = Field(default=8, description="Targets shown as token heatmaps in metadata.")
    seed: int = Field(default=PromptOptConfig.seed, description="Seeds the random initial prompt and the "
                      "candidate sampling (combined with the feature index).")

    def prompt_config(self) -> PromptOptConfig:
        return core_config(self, PromptOptConfig)


PROMPT_CONFIG = ConfigPair(
    OptimizedPromptsConfig, PromptOptConfig,
    asset_only={"feature_indices": "target selection (default: feature_clusters' table)",
                "max_features": "target selection", "methods": "an argument of optimize_features",
                "init": "the asset reads the starting prompts from activation_examples",
                "dtype": "loading the language model", "heatmaps": "materialization metadata"},
    core_only={"min_improvement": "a numerical tolerance of the early stop, not a run budget",
               "report_every_s": "progress cadence; the asset's heartbeat keeps its log within 10 s"},
)


def _targets(config: OptimizedPromptsConfig, upstream: StepInputs) -> list[int]:
    """The configured targets, else feature_clusters' selected features (fails when there are none)."""
    if config.feature_indices is not None:
        targets = list(config.feature_indices)
    else:
        targets = (upstream.read("feature_clusters", ["feature", "selected"], or_else="give feature_indices")
                   .filter(pl.col("selected"))["feature"].sort().to_list())
    if not targets:
        raise dg.Failure(f"{upstream.where}: no target features: feature_clusters selected none.")
    return targets[: config.max_features] if config.max_features is not None else targets


def _top_examples(upstream: StepInputs, targets: list[int]) -> pl.DataFrame:
    """Each target's top dataset example (kind ``top``, rank 0), read once: where a search starts and what its
    heatmap shows beside the optimized prompts."""
    return (upstream.scan("activation_examples")
            .filter((pl.col("kind") == "top") & (pl.col("rank") == 0) & pl.col("feature").is_in(targets))
            .select("feature", "activation", "token_ids", "tokens", "token_activations", "token_position",
                    "window_start").collect())


def _top_example_prompts(top: pl.DataFrame, length: int) -> dict[int, list[int]]:
    """Target -> the ``length`` tokens of its top example ending at the peak (targets whose example is too short
    near the document's start are left out: they start from random tokens)."""
    out = {}
    for feature, ids, position, window_start in top.select("feature", "token_ids", "token_position",
                                                           "window_start").iter_rows():
        prompt = example_prompt(ids, position - window_start, length, first=1 if window_start == 0 else 0)
        if prompt is not None:
            out[feature] = prompt
    return out


def _heatmaps(frame: pl.DataFrame, examples: pl.DataFrame, n: int) -> bytes:
    rows = []
    for feature in frame["feature"].unique(maintain_order=True).to_list()[:n]:
        for r in frame.filter(pl.col("feature") == feature).iter_rows(named=True):
            rows.append((f"feature {feature}, {r['method']}: {r['activation']:.2f}", r["tokens"],
                         r["position_activations"]))
        top = examples.filter(pl.col("feature") == feature)
        if top.height:
            ex = top.row(0, named=True)
            rows.append((f"feature {feature}, top dataset example: {ex['activation']:.2f}", ex["tokens"],
                         ex["token_activations"]))
    return token_heatmap_png(rows, "optimized prompts vs top dataset examples")


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=[feature_clusters, "feature_stats", "activation_examples", "sae_decoder"],
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"torch", "polars", "delta"},
    group_name="prompts",
    owners=["team:interpretability"],
    code_version="1",
    automation_condition=on_new_inputs(),
    description="Per target feature and method: the prompt that maximally activates it (discrete GCG/EPO or "
    "continuous), its activation against the dataset maximum, cross-entropy, steps and trajectory.",
)
def optimized_prompts(context: dg.AssetExecutionContext, config: OptimizedPromptsConfig, lake: LakeResource,
                      language_model: LanguageModelResource, sae_source: SaeSourceResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    model, layer = location.model_key, location.layer
    config, budget = with_budget(context, config, "optimized_prompts", location.entry,
                                 language_model.device.torch_device())
    upstream = StepInputs(lake, "optimized_prompts", model, layer)
    upstream.require("feature_stats", "activation_examples")
    targets = _targets(config, upstream)
    top = _top_examples(upstream, targets)
    init = _top_example_prompts(top, config.length) if config.init == "top_example" else {}
    try:
        cfg = config.prompt_config()
        loaded = sae_source.load(location)
        lm = language_model.load(location.entry.language_model, config.dtype)
        lm.check_hook(location.hook_name)
        start = time.perf_counter()
        # One step at 32k latents can take seconds: the heartbeat keeps the log within 10 s between reports.
        with heartbeat(context.log.info, f"optimized_prompts {model} layer {layer}") as report:
            results = optimize_features(lm, location.hook_name, loaded.sae, targets, cfg, methods=config.methods,
                                        init_prompts=init, report=report)
    except (SaeLoadError, ValueError) as err:
        raise dg.Failure(f"optimized_prompts {model} layer {layer}: {err}") from err
    seconds = time.perf_counter() - start
    stats = upstream.scan("feature_stats").filter(pl.col("feature").is_in(targets)).collect()
    dataset_max = dict(stats.select("feature", "max_activation").iter_rows())
    frame = prompts_frame(results, dataset_max, lambda ids: lm.tokenizer.decode(ids) if lm.tokenizer else "")
    written = lake.write_partition("optimized_prompts", frame, model, layer)
    by_method = method_summary(frame)
    for method, summary in by_method.items():
        context.log.info("%s: %s", method, summary)
    curves = {f"{r['feature']} {r['method']}": (np.arange(len(r["trajectory"])), np.array(r["trajectory"]))
              for r in frame.head(12).iter_rows(named=True)}
    return dg.MaterializeResult(metadata={
        "budget_profile": budget, "started_from_top_example": len(init),
        "precision": precision_name(compute_dtype(cfg.precision, language_model.device.torch_device())),
        **table_metadata(written, inputs), "targets": len(targets), "seconds": round(seconds, 1),
        "by_method": dg.MetadataValue.json(by_method),
        **{f"reached_dataset_max[{m}]": v["reached_dataset_max"] for m, v in by_method.items()},
        "trajectories": png_markdown(lines_png(curves, "best activation per step", "step", "activation"),
                                     "optimization trajectories"),
        "heatmaps": png_markdown(_heatmaps(frame, top, config.heatmaps), "token heatmaps"),
    })
