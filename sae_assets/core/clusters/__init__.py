"""Feature clusters: entropy/sparsity filters, UMAP reduction, DBSCAN/HDBSCAN, plots."""
