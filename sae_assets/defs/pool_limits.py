"""Two runs that start at once never fail on a pool's first use.

A pool with no limit of its own (``gpu`` under ``concurrency.pools.default_limit``) gets its row in the instance
when a step first claims a slot of it. On PostgreSQL two runs that claim at the same moment both insert that row;
the loser's insert fails, Dagster's fallback update then runs in the aborted transaction, and the loser's run fails
before any step (``InFailedSqlTransaction``; seen with two partitions launched together on a fresh deployment).
SQLite serializes the writers, so the embedded default never sees it.

:func:`ensure_pool_limits` runs at the start of every run, before a step claims a slot
(:class:`sae_assets.defs.executors.RunRecoveryExecutor`): it creates the missing rows of the run's pools, and
when another run creates one first it reads the row that run made instead of failing. The claim then finds the
row and inserts nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

ATTEMPTS = 5


def ensure_pool_limits(instance: dg.DagsterInstance, pools: Iterable[str], log: dg.DagsterLogManager) -> None:
    """Give every pool in ``pools`` its default-limit row, unless it has one (its own limit, or a default)."""
    if instance.global_op_concurrency_default_limit is None:
        return  # pools without a limit of their own are unlimited: no row to make
    storage = instance.event_log_storage
    wanted = set(pools)
    for attempt in range(1, ATTEMPTS + 1):
        missing = sorted(wanted - {limit.name for limit in storage.get_pool_limits()})
        if not missing:
            return
        try:
            for pool in missing:
                storage.initialize_concurrency_limit_to_default(pool)
        except SQLAlchemyError as err:  # another run made the row first: read it on the next pass
            if attempt == ATTEMPTS:
                raise
            log.debug(f"Pool row(s) {missing} were created by another run at once ({type(err).__name__}); "
                      "reading them again")
            time.sleep(0.05 * attempt)

