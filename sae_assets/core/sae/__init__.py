"""The SAE itself: training, metrics, the decoder table, token contexts, logit effects."""
