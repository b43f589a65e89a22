"""Dagster wiring only: partitions, assets, jobs, sensors."""
