"""The one row a query always returns: an aggregate, a function call, ``SELECT current_user``, ``to_regclass(...)``.

psycopg's ``fetchone`` is typed ``Row | None`` because a query may yield no row. For the queries that always yield
one, ``one_row(conn.execute(...))`` returns the row typed as present, and if the database ever answers with none it
fails with :class:`NoRow` instead of a ``TypeError`` on ``None[0]`` somewhere later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from psycopg import AsyncCursor, Cursor

Row = TypeVar("Row")


class NoRow(LookupError):
    """A query that always returns a row returned none."""


def one_row(cur: Cursor[Row]) -> Row:
    """The next row of ``cur``; :class:`NoRow` if there is none."""
    row = cur.fetchone()
    if row is None:
        raise NoRow(_message(cur.statusmessage))
    return row


async def one_row_async(cur: AsyncCursor[Row]) -> Row:
    """The next row of the async ``cur``; :class:`NoRow` if there is none."""
    row = await cur.fetchone()
    if row is None:
        raise NoRow(_message(cur.statusmessage))
    return row


def _message(status: str | None) -> str:
    return f"expected a row, the query returned none ({status or 'no result'})"
