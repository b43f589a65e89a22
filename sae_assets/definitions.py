"""The sae-assets code location."""

import dagster as dg

from sae_assets.defs.assets.activation_scan import activation_scan
from sae_assets.defs.assets.alignment_report import alignment_report
from sae_assets.defs.assets.alignment_scores import alignment_scores
from sae_assets.defs.assets.explanation_embeddings import explanation_embeddings
from sae_assets.defs.assets.explanations import explanations
from sae_assets.defs.assets.feature_clusters import feature_clusters
from sae_assets.defs.assets.feature_labels import feature_labels
from sae_assets.defs.assets.feature_map import feature_map
from sae_assets.defs.assets.optimized_prompts import optimized_prompts
from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.automation import automation_sensor
from sae_assets.defs.checks import build_checks
from sae_assets.defs.executors import executor_from_env
from sae_assets.defs.jobs import jobs
from sae_assets.defs.resources import default_resources
from sae_assets.defs.schedules import weekly_explanations_refresh
from sae_assets.defs.sensors import new_sae_sensor

defs = dg.Definitions(
    assets=[trained_sae, sae_decoder, activation_scan, feature_labels, explanations, explanation_embeddings,
            alignment_scores, alignment_report, feature_clusters, optimized_prompts, feature_map],
    asset_checks=build_checks(),
    jobs=jobs,
    sensors=[new_sae_sensor, automation_sensor],
    schedules=[weekly_explanations_refresh],
    resources=default_resources(),
    executor=executor_from_env(),  # SAE_ASSETS_EXECUTOR: in_process (default), multiprocess or k8s
)
