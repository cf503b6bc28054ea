"""Shared benchmark plumbing: isolated servers and one JSON line per figure.

Each `benchmarks/bench_<name>.py` defines ``main() -> None`` and calls
:func:`emit` once per figure, with the value and baseline measured in the same run.
``python -m benchmarks`` runs each in a process of its own.

``BENCH_SMOKE=1`` is the smoke mode CI runs after the tests: one run of each figure at
small sizes (:func:`sized`), through the same code path, so a benchmark a change broke
fails CI instead of rotting unseen. Its figures prove the path runs, nothing more.
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
from typing import Any

import psycopg
import redis
from sqlalchemy.engine import make_url

from corec_tasks.db import libpq_url
from corec_tasks.keyfile import create_key_file
from corec_tasks.keys import all_shipped


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name} must be a whole number >= 1, not {raw!r}")
    return int(raw)


SMOKE = os.environ.get("BENCH_SMOKE", "") not in ("", "0")
RUNS = 1 if SMOKE else _int_env("BENCH_RUNS", 5)
ROOT = Path(__file__).resolve().parent.parent


def sized(name: str, full: int, smoke: int) -> int:
    """A size: environment variable ``name`` if set, else ``smoke`` in smoke mode, else
    ``full``."""
    return _int_env(name, smoke if SMOKE else full)



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
        # Its own data folder with the node's keys, as `corec keys init` makes them.
        keys = Path(tempfile.mkdtemp(prefix="corec-bench-keys-"))
        servers.callback(shutil.rmtree, keys, ignore_errors=True)
        folders = [m.parent for m in (ROOT / "plugins").glob("*/plugin.json")]
        for spec in all_shipped(folders):
            create_key_file(keys / spec.file)
        names = ("REDIS_URL", "DATABASE_URL", "COREC_REDIS_PREFIX", "COREC_DATA_DIR")
        old = {k: os.environ.get(k) for k in names}
        os.environ.update(REDIS_URL=redis_url, DATABASE_URL=url, COREC_REDIS_PREFIX=prefix,
                          COREC_DATA_DIR=str(keys))  # fmt: skip
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


def seed_nucleus() -> tuple[Any, Any, int]:
    """Inside :func:`bench_env`: the shipped ``corec_config.json`` (the seed's sample and
    the plugins' blocks) migrated and registered. Returns settings, the nucleus and the
    number of blocks registered, which every figure about "a full cycle" checks against
    (never a constant: the count follows the config)."""
    os.environ["COREC_CONFIG"] = str(ROOT / "corec_config.json")
    from corec_tasks.nucleus import Nucleus
    from corec_tasks.settings import load_settings
    from corec_tasks.storage.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    nucleus = Nucleus(settings)
    nucleus.initialize()
    blocks = int(nucleus.modules["registry"].run()["blocks"])
    return settings, nucleus, blocks


def full_cycle(nucleus: Any, blocks: int, chunk: int | None) -> dict[str, Any]:
    """Run one cycle of every registered block through the workers; fail unless all
    ``blocks`` ran and landed in `bloques`."""
    from corec_tasks.cli.blocks_cmd import run_cycles

    record: dict[str, Any] = run_cycles(nucleus, 1, chunk, timeout=600, quiet=True)[0]
    if not record["ran"] == record["persisted"] == blocks:
        raise SystemExit(f"a full cycle of {blocks} blocks did not run whole: {record}")
    return record
