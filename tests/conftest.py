"""Shared fixtures: real throwaway PostgreSQL clusters on loopback (initdb + pg_ctl, pgserver as fallback)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import psycopg
import pytest

from kalshictl.db.embedded import PostgresCluster

pytest_plugins = ["tests.tmpguard"]  # a private TMPDIR for the session; fails the run if a test leaves files behind
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One cluster shared by the session, for tests that only need a fresh database (see ``fresh_db``)."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_cluster_factory() -> Iterator[Callable[..., PostgresCluster]]:
    """Start extra clusters (each stoppable/restartable by the test); all are destroyed at teardown."""
    made: list[PostgresCluster] = []

    def make(**kwargs) -> PostgresCluster:
        cluster = PostgresCluster(**kwargs)
        cluster.start()
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.destroy()


@pytest.fixture
def fresh_db(pg_cluster: PostgresCluster) -> Iterator[str]:
    """Name of a new, empty database in the shared cluster (dropped afterwards)."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    pg_cluster.create_database(name)
    yield name
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
