"""Plain torch / polars / numpy computations, one package per pipeline stage; imports no Dagster.

``sae`` (training, metrics, decoder table), ``scan`` (the activation scan and its tables), ``labels``,
``alignment`` (explanations, SFAL), ``clusters``, ``prompts``, ``feature_map``, and ``common`` (what several
stages share). A stage imports only itself and ``common`` (``tests/test_layout.py``); the UI's asset groups
carry the same names.
"""
