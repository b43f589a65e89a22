"""What every asset and job shares, bound in one place: the resources and the executor.

The defs-folder loader (``sae_assets/definitions.py``) takes the other modules' assets, checks, jobs, sensors
and schedules as it finds them; this module is where the location's global settings are merged in.
"""

import dagster as dg

from sae_assets.defs.executors import executor_from_env
from sae_assets.defs.resources import default_resources


@dg.definitions
def platform_definitions() -> dg.Definitions:
    # SAE_ASSETS_EXECUTOR: in_process (default), multiprocess, celery or k8s; resources from SAE_ASSETS_* settings.
    return dg.Definitions(resources=default_resources(), executor=executor_from_env())
