"""Feature maps: UMAP of decoder vectors to 3-D and cosine k-NN edges for the viewer."""
