"""This process's runtime: its settings, its Redis client and the services built on them.

Why one object: the settings, clients and per-process services (the block nucleus,
a plugin's pool or breakers, what the manifests declare) used to be separate
``lru_cache`` singletons and module dicts, each cleared on its own, or not at all,
by tests and after a fork. They hang off one :class:`Runtime` now. A Celery pool
child builds its own after the fork (``worker_process_init``, connected in
``corec_tasks/celery.py``); any other process (beat, the CLI, tests) builds it on
first use, and a process forked without that signal notices the new pid and builds
its own too. :func:`reset` drops it at once: the next use reads the environment and
``corec_config.json`` again.

The framework names no plugin: a plugin keeps its per-process objects here under a
key it owns, ``runtime().service("capital_pool.pool", factory)``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

import redis

from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings, load_settings

T = TypeVar("T")
log = logging.getLogger(__name__)


class Runtime:
    """What one process shares: settings, a Redis client and services made on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.pid = os.getpid()
        self._settings = settings
        self._redis: redis.Redis | None = None
        self._services: dict[Hashable, Any] = {}
        # Reentrant: a factory may ask for another service (the nucleus reads settings).
        self._lock = threading.RLock()

    @property
    def settings(self) -> Settings:
        """The settings, parsed on first use (a bad config raises here, naming the key)."""
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = load_settings()
        return self._settings

    @property
    def redis(self) -> redis.Redis:
        """This process's Redis client on the settings' Redis (bytes replies)."""
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = redis_client(self.settings)
        return self._redis

    def service(self, key: Hashable, factory: Callable[[Runtime], T]) -> T:
        """The service ``key`` of this process, made by ``factory(runtime)`` on first use."""
        try:
            return cast(T, self._services[key])
        except KeyError:
            pass
        with self._lock:
            if key not in self._services:
                self._services[key] = factory(self)
            return cast(T, self._services[key])

    def close(self) -> None:
        """Close the Redis client and every service that has a ``close()`` (a pool's
        connections), so a dropped runtime leaves no socket for the garbage collector.
        Errors are logged, not raised: closing is best effort."""
        with self._lock:
            things = [*self._services.values(), self._redis]
            self._services.clear()
            self._redis = None
        for thing in things:
            close = getattr(thing, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # a service's own code
                    log.warning("runtime: closing %r failed: %r", thing, exc)

    def per_config(self, settings: Settings, name: str, read: Callable[[Settings], T]) -> T:
        """``read(settings)``, once per config file and plugin path: what the plugins'
        manifests declare, for a process that may see more than one config (tests)."""
        key = (name, str(settings.config_path), settings.env.plugin_path)
        return self.service(key, lambda _: read(settings))


class _Current:
    """The holder of this process's runtime (the one mutable module-level object)."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.lock = threading.Lock()


_current = _Current()


def runtime() -> Runtime:
    """This process's runtime, built on first use and again in a forked child."""
    current = _current.runtime
    if current is not None and current.pid == os.getpid():
        return current
    with _current.lock:
        current = _current.runtime
        if current is None or current.pid != os.getpid():
            current = _current.runtime = Runtime()
    return current


def reset(settings: Settings | None = None) -> Runtime:
    """Drop this process's runtime and start a new one (on ``settings`` if given, else
    read from the environment on first use); return it.

    The old runtime is closed if this process made it (tests, a CLI switching config);
    a forked child (``worker_process_init``) leaves its parent's connections alone.
    """
    with _current.lock:
        old = _current.runtime
        current = _current.runtime = Runtime(settings)
    if old is not None and old.pid == os.getpid():
        old.close()
    return current


def get_settings() -> Settings:
    """This process's settings (workers, beat, CLI), parsed once per runtime."""
    return runtime().settings
