"""The sae-assets code location: every Dagster object under ``sae_assets/defs/``, found by walking the folder.

A new asset, check, job, sensor or schedule is a module-level object in a file under ``defs/``; nothing here
changes. Resources and the executor are bound once, in ``defs/platform.py``. The code-location name is
written once, in ``pyproject.toml`` (``[tool.dg.project]``), which ``dagster dev`` and the CLI read.
"""

from pathlib import Path

import dagster as dg

import sae_assets.defs

# ComponentTree.from_module is what dg.load_from_defs_folder builds on, minus its search for pyproject.toml,
# so the location also loads where the package is installed as a wheel (the Docker image, site-packages).
defs = dg.ComponentTree.from_module(
    defs_module=sae_assets.defs, project_root=Path(__file__).resolve().parent.parent).build_defs()
