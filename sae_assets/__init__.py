"""sae-assets: a Dagster platform for sparse-autoencoder interpretability."""
