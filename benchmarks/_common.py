"""Shared benchmark plumbing: isolated servers and one JSON line per figure.

Each `benchmarks/bench_<name>.py` defines ``main() -> None`` and calls
:func:`emit` once per figure, with the value and baseline measured in the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

from corec_tasks.db import libpq_url

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def emit(name: str, values: Sequence[float], unit: str, baseline: Sequence[float]) -> dict:
    """Print and return one figure: medians of ``values`` and ``baseline``."""
    value = statistics.median(values)
    base = statistics.median(baseline)
    line = {
        "bench": name,
        "value": round(value, 6),
        "unit": unit,
        "baseline": round(base, 6),
        "ratio": round(value / base, 4) if base else None,
        "runs": len(values),
    }
    print(json.dumps(line), flush=True)
    return line


@dataclass
class BenchEnv:
    """Isolated servers for one benchmark: its own database and Redis key prefix."""

    redis_url: str
    database_url: str
    prefix: str


@contextmanager
def bench_env() -> Iterator[BenchEnv]:
    """Real servers from REDIS_URL/DATABASE_URL, or the embedded ones; cleaned after,
    the embedded servers stopped even if the set-up itself fails."""
    redis_url = os.environ.get("REDIS_URL")
    database_url = os.environ.get("DATABASE_URL")
    with ExitStack() as servers:
        if not (redis_url and database_url):
            from corec_tasks import services

            tmp = Path(tempfile.mkdtemp(prefix="corec-bench-"))
            servers.callback(shutil.rmtree, tmp, ignore_errors=True)
            servers.callback(services.down, tmp)
            state = services.up(tmp)
            redis_url = redis_url or state.redis_url
            # The owner: a benchmark creates its own database and migrates it, which the
            # application role (corec_app, no CREATEDB) may not.
            database_url = database_url or state.owner_database_url or state.database_url
        assert redis_url and database_url
        run = uuid.uuid4().hex[:8]
        dbname = f"corec_bench_{run}"
        admin = libpq_url(database_url)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        url = make_url(database_url).set(database=dbname).render_as_string(hide_password=False)
        prefix = f"corec_bench_{run}:"
        old = {k: os.environ.get(k) for k in ("REDIS_URL", "DATABASE_URL", "COREC_REDIS_PREFIX")}
        os.environ.update(REDIS_URL=redis_url, DATABASE_URL=url, COREC_REDIS_PREFIX=prefix)
        try:
            yield BenchEnv(redis_url, url, prefix)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)
            client.close()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
