"""Serve the feature-map viewer on 127.0.0.1, with the feature and SAE pages' JSON API over the lake.

    python -m sae_assets.viewer                       # the lake's exports/feature_map, http://127.0.0.1:8050
    python -m sae_assets.viewer --exports DIR --port 0 --model smollm2-135m@demo-res
    python -m sae_assets.viewer --lake s3://bucket/lake   # /api/feature, /api/search, /api/sae read this lake

--lake defaults to the platform's lake (SAE_ASSETS_LAKE, else $DAGSTER_HOME/lake, else dagster_home/lake).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from urllib.parse import quote

from sae_assets import settings
from sae_assets.viewer.server import list_models, make_server, plotly_js

log = logging.getLogger("sae_assets.viewer")


def default_lake() -> str:
    """The lake the platform uses (:func:`sae_assets.settings.lake_root`, as the ``lake`` resource's root)."""
    return settings.lake_root()


def default_exports(lake: str | None = None) -> Path:
    """``<files>/exports/feature_map`` of ``lake`` (default: the platform's)."""
    from sae_assets.resources.lake import LakeResource

    resource = LakeResource(root=lake or settings.lake_root(), files_root=settings.files_root())
    return resource.local_dir("exports", "feature_map")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, help="feature_map exports root (default: <lake>/exports/feature_map)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8050, help="port (0: any free port)")
    parser.add_argument("--model", help="model key to open first")
    parser.add_argument("--lake", help="lake root (a path or a deltalake URI) the feature API reads (default: "
                        "SAE_ASSETS_LAKE, else $DAGSTER_HOME/lake, else dagster_home/lake)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        plotly_js()
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    lake = args.lake or default_lake()
    try:
        exports = (args.exports or default_exports(lake)).expanduser().resolve()
    except ValueError as err:  # a remote lake without SAE_ASSETS_FILES: no local exports directory
        log.error("%s Or pass --exports.", err)
        return 2
    models = list_models(exports)
    if not models:
        log.warning("No manifest.json under %s yet: materialize feature_map (the demo does) and reload.", exports)
    server = make_server(exports, args.host, args.port, lake_root=lake)
    model = args.model or (models[0] if models else "")
    log.info("Serving %s (%d models) at %s/?model=%s; feature API over the lake %s", exports, len(models),
             server.url, quote(model), lake)
    try:
        server.run()  # uvicorn: until Ctrl-C (or SIGTERM), then a clean shutdown
    except KeyboardInterrupt:  # uvicorn re-raises the signal it handled
        pass
    finally:
        server.socket.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
