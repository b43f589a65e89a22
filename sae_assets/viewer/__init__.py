"""The feature-map viewer: a static page (plotly.js from the installed ``plotly`` wheel) over the
``feature_map`` exports, served on 127.0.0.1 by ``python -m sae_assets.viewer`` (a Starlette app under uvicorn,
``server.py``)."""
