"""The feature map export's file names, shared by its writer (:mod:`~sae_assets.core.feature_map.layout`) and the
viewer's server, which reads the files without loading the writer (nor its torch)."""

from __future__ import annotations

import re

LAYER_FILE = re.compile(r"^layer-(\d+)\.json(\.gz)?$")
"""One layer's nodes and edges, ``layer-N.json`` or ``layer-N.json.gz``; group 1 is the layer."""
MANIFEST = "manifest.json"
"""The layers present in a model's export directory."""
