"""Jobs over the model × layer partitions."""

from __future__ import annotations

import dagster as dg

from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.alignment_report import alignment_report
from sae_assets.defs.assets.explanations import explanations
from sae_assets.defs.assets.neuronpedia_explanations import neuronpedia_explanations
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.sae_eval_report import sae_eval_report
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import model_layer_partitions, model_partitions

# Platform-trained SAEs: train the SAE, then publish its decoder.
train_and_publish_sae_job = dg.define_asset_job(
    "train_and_publish_sae",
    selection=dg.AssetSelection.assets(trained_sae, sae_decoder),
    partitions_def=model_layer_partitions,
    description="Train a platform SAE for one model × layer partition and write its decoder table.",
)

# Pretrained SAEs (SAELens releases, local directories): nothing to train.
publish_sae_job = dg.define_asset_job(
    "publish_sae",
    selection=dg.AssetSelection.assets(sae_decoder),
    partitions_def=model_layer_partitions,
    description="Load the catalog's SAE for one model × layer partition and write its decoder table.",
)

scan_activations_job = dg.define_asset_job(
    "scan_activations",
    selection=dg.AssetSelection.assets(activation_scan),
    partitions_def=model_layer_partitions,
    description="One LM + SAE pass over the corpus: feature_stats, activation_examples and cooccurrence.",
)

# Everything per model × layer below an SAE's decoder: the path for pretrained SAEs (SAELens releases such as
# GemmaScope / LlamaScope, local directories, the drop folder). full_pipeline is trained_sae + the same: the README
# demo's job. Model-level reports have other partitions and run in their own job once the layers are done.
# Neuronpedia's explanations (label candidates) are read in the same run: empty for models without them.
MODEL_LEVEL = dg.AssetSelection.assets(alignment_report, sae_eval_report)
ANALYSIS = (dg.AssetSelection.assets(sae_decoder).downstream() | dg.AssetSelection.assets(neuronpedia_explanations)) \
    - MODEL_LEVEL
analyze_sae_job = dg.define_asset_job(
    "analyze_sae",
    selection=ANALYSIS,
    partitions_def=model_layer_partitions,
    description="Publish the partition's SAE decoder (pretrained or already trained) and materialize every "
    "model × layer asset below it: scan, labels, explanations, SFAL scores, clusters, prompts, feature map.",
)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.assets(trained_sae) | ANALYSIS,
    partitions_def=model_layer_partitions,
    description="Train the partition's SAE, then everything analyze_sae materializes.",
)


PIPELINE_JOBS = (analyze_sae_job.name, full_pipeline_job.name)


def pipeline_job_name(source_kind: str) -> str:
    """The job that analyses a catalog SAE of this source kind end to end (``train`` SAEs are trained first)."""
    return full_pipeline_job.name if source_kind == "train" else analyze_sae_job.name


model_reports_job = dg.define_asset_job(
    "model_reports",
    selection=MODEL_LEVEL,
    partitions_def=model_partitions,
    description="Per model: the reports across its layers (SFAL alignment_report, sae_eval_report).",
)

refresh_explanations_job = dg.define_asset_job(
    "refresh_explanations",
    selection=(dg.AssetSelection.assets(neuronpedia_explanations) | dg.AssetSelection.assets(explanations).downstream())
    - MODEL_LEVEL,
    partitions_def=model_layer_partitions,
    description="Re-read a partition's Neuronpedia explanations and its explanations (Neuronpedia's, or the "
    "platform's labels) and refresh what depends on them: embeddings, SFAL scores, the feature map. The weekly "
    "schedule runs it for every partition whose explanations were materialized; the model reports follow by "
    "automation. feature_labels is not re-run (its LLM labels are the slow part): materialize it to re-score "
    "Neuronpedia's new explanations as label candidates.",
)

jobs = [train_and_publish_sae_job, publish_sae_job, scan_activations_job, analyze_sae_job, full_pipeline_job,
        model_reports_job, refresh_explanations_job]
