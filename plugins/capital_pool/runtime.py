"""This process's capital pool and grant key, made once (workers, beat-driven
consumers, the CLI's in-process calls). Kept apart from ``tasks`` so code that runs
the pool without sending tasks (the manifest's consumers) needs no Celery app."""

from __future__ import annotations

from corec_tasks.runtime import Runtime, runtime
from plugins.capital_pool import grants
from plugins.capital_pool.service import CapitalPool
from plugins.capital_pool.settings import capital_config


def pool() -> CapitalPool:
    """This worker process's capital pool (its own connections)."""
    return runtime().service("capital_pool.pool", _new_pool)


def _new_pool(rt: Runtime) -> CapitalPool:
    return CapitalPool(rt.settings, capital_config(rt.settings))


def grant_key() -> bytes:
    """The grant key, read once per worker process (a new key needs a restart)."""
    return runtime().service("capital_pool.grant_key", lambda _: grants.load_key(pool().settings))
