"""This process's capital pool and grant key, made once (workers, beat-driven
consumers, the CLI's in-process calls). Kept apart from ``tasks`` so code that runs
the pool without sending tasks (the manifest's consumers) needs no Celery app."""

from __future__ import annotations

from functools import lru_cache

from corec_tasks.settings import get_settings
from plugins.capital_pool import grants
from plugins.capital_pool.service import CapitalPool
from plugins.capital_pool.settings import capital_config


@lru_cache(maxsize=1)
def pool() -> CapitalPool:
    """This worker process's capital pool (its own connections)."""
    settings = get_settings()
    return CapitalPool(settings, capital_config(settings))


@lru_cache(maxsize=1)
def grant_key() -> bytes:
    """The grant key, read once per worker process (a new key needs a restart)."""
    return grants.load_key(pool().settings)
