"""one_row / one_row_async on a real PostgreSQL: the row when there is one, NoRow (no TypeError) when none."""

from __future__ import annotations

import psycopg
import pytest

from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.rows import NoRow, one_row, one_row_async


def test_one_row_returns_the_row_and_refuses_none(pg_cluster: PostgresCluster, fresh_db: str) -> None:
    with psycopg.connect(pg_cluster.dsn(fresh_db)) as conn:
        assert one_row(conn.execute("SELECT count(*), min(x) FROM (VALUES (2), (1)) v(x)")) == (2, 1)
        assert one_row(conn.execute("SELECT to_regclass('no_such_table')")) == (None,)  # a row holding NULL is a row
        with pytest.raises(NoRow, match=r"expected a row, the query returned none \(SELECT 0\)"):
            one_row(conn.execute("SELECT 1 WHERE false"))


async def test_one_row_async_returns_the_row_and_refuses_none(pg_cluster: PostgresCluster, fresh_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_cluster.dsn(fresh_db)) as conn:
        cur = await conn.execute("SELECT current_database()")
        assert await one_row_async(cur) == (fresh_db,)
        cur = await conn.execute("SELECT 1 WHERE false")
        with pytest.raises(NoRow, match="expected a row"):
            await one_row_async(cur)
