"""One PostgreSQL connection a collector keeps between scrapes.

Opening a connection costs more than the queries a scrape runs (about 10 ms of the
100 ms budget on the sample config), so a collector keeps one, in autocommit (a
scrape never holds a transaction open), and opens a new one after any error.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg

from corec_tasks.db import libpq_url


class ScrapeConnection:
    """``rows(sql)``: the query's rows, on a kept connection (reopened after a failure)."""

    def __init__(self, database_url: str, connect_timeout_s: int = 5) -> None:
        self.url = libpq_url(database_url)
        self.timeout = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True,
                                             connect_timeout=self.timeout)  # fmt: skip
            try:
                return self._conn.execute(sql, params).fetchall()
            except psycopg.Error:
                self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
