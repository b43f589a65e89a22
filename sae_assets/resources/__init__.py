"""Dagster resources: typed clients that return domain objects."""
