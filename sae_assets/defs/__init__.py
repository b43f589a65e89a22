"""Dagster wiring only, loaded as a folder by ``sae_assets/definitions.py``: every module-level asset, check,
job, sensor and schedule here is part of the code location. ``platform.py`` binds the resources and the
executor once; ``assets/`` holds one module per asset (named as the asset), each calling into ``core/``."""
