"""A pool's row is made once, however many runs start at once (PostgreSQL, as deploy/celery runs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
from sqlalchemy.exc import SQLAlchemyError

from sae_assets.defs.pool_limits import ensure_pool_limits
from tests.deploy.cluster import dagster_home, postgres


@pytest.fixture(scope="module")
def postgres_env() -> Iterator[dict[str, str]]:
    with postgres() as env:
        yield env


@pytest.fixture
def instance(postgres_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[dg.DagsterInstance]:
    for name, value in postgres_env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path))) as made:
        yield made


def _limits(instance: dg.DagsterInstance) -> dict[str, tuple[int, bool]]:
    return {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}


def test_a_second_insert_of_a_pool_row_fails_upstream(instance: dg.DagsterInstance) -> None:
    """What ensure_pool_limits works around: Dagster's insert-then-update fails once the row exists."""
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("upstream")
    with pytest.raises(SQLAlchemyError):
        storage.initialize_concurrency_limit_to_default("upstream")


def test_a_run_that_loses_the_race_reads_the_winners_row(instance: dg.DagsterInstance) -> None:
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("gpu")  # the other run, a moment earlier
    real = storage.get_pool_limits
    reads: list[int] = []

    def first_read_stale(self: object) -> list:  # this run read the pools before the other run's insert
        reads.append(1)
        return [] if len(reads) == 1 else real()

    log = mock.Mock()
    with mock.patch.object(type(storage), "get_pool_limits", first_read_stale):
        ensure_pool_limits(instance, {"gpu"}, log)
    assert _limits(instance)["gpu"] == (1, True)
    assert "created by another run" in log.debug.call_args.args[0]


def test_missing_rows_are_made_and_set_limits_kept(instance: dg.DagsterInstance) -> None:
    instance.event_log_storage.set_concurrency_slots("set-by-hand", 3)
    ensure_pool_limits(instance, {"set-by-hand", "fresh"}, mock.Mock())
    ensure_pool_limits(instance, {"set-by-hand", "fresh"}, mock.Mock())  # every later run: nothing to do
    limits = _limits(instance)
    assert limits["fresh"] == (1, True)
    assert limits["set-by-hand"] == (3, False)
