"""Running steps beyond one machine: the Celery executor and its workers (``pip install sae-assets[celery]``).

Outside ``defs/`` on purpose: the defs-folder loader imports every module there, and this one needs the optional
``celery`` extra; :func:`sae_assets.defs.executors.executor_from_env` imports it only when it is chosen.
"""
