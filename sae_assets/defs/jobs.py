"""Jobs over the model × layer partitions."""

from __future__ import annotations

import dagster as dg

from sae_assets.defs.assets.sae_decoder import sae_decoder
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.partitions import model_layer_partitions

# The embedded default's main job: train the SAE, then publish its decoder.
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

jobs = [train_and_publish_sae_job, publish_sae_job]
