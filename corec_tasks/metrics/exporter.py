"""The exporter: the framework's and the enabled plugins' metrics in one registry.

A plugin contributes metrics by a function in its main.py, found the way the
nucleus finds ``register_processors``::

    def metrics_collectors(settings: Settings, config: dict) -> list[Collector]: ...

(``config`` is the plugin's own config file). Each source (the framework, each
plugin) is collected on its own: one that fails (PostgreSQL down, a plugin bug) is
logged, shows as ``corec_metrics_source_up{source=...} 0`` and leaves the rest of
the scrape intact. Scrapes closer together than ``min_interval_s`` share one
collection, so several Prometheus servers cost the cluster no more than one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.errors import PluginError
from corec_tasks.metrics.cluster import ClusterMetrics
from corec_tasks.nucleus import load_plugins
from corec_tasks.settings import Settings

log = logging.getLogger(__name__)

#: The plugin hook's name in a plugin's main.py.
HOOK = "metrics_collectors"
#: Scrapes within this many seconds of the last collection reuse it.
MIN_INTERVAL_S = 1.0


class Source(Protocol):
    """Anything with ``collect()`` yielding metric families (a prometheus Collector)."""

    def collect(self) -> Iterable[Metric]: ...


def plugin_sources(settings: Settings) -> list[tuple[str, Source]]:
    """``(plugin name, collector)`` from each enabled plugin's ``metrics_collectors``."""
    out: list[tuple[str, Source]] = []
    for plugin in load_plugins(settings, default_registry()):
        hook = getattr(plugin.module, HOOK, None)
        if hook is None:
            continue
        try:
            out += [(plugin.name, c) for c in hook(settings, plugin.config)]
        except Exception as exc:  # plugin code: one named error
            raise PluginError(plugin.name, f"{HOOK} failed: {exc!r}") from exc
    return out


class CorecCollector:
    """One collector over every source, with a short per-scrape cache."""

    def __init__(
        self,
        settings: Settings,
        sources: list[tuple[str, Source]] | None = None,
        *,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        self.sources: list[tuple[str, Source]] = [("corec", ClusterMetrics(settings))]
        self.sources += plugin_sources(settings) if sources is None else sources
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._at = float("-inf")

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self.min_interval_s:
                self._cached = self._collect()
                self._at = time.monotonic()
            cached = list(self._cached)
        yield from cached

    def _collect(self) -> list[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily("corec_metrics_source_up",
                               "1 if the source answered this scrape.", labels=["source"])
        out: list[Metric] = []
        ok: dict[str, int] = {}  # one sample per source, however many collectors it has
        for name, source in self.sources:
            try:
                out += list(source.collect())
                ok.setdefault(name, 1)
            except Exception as exc:
                log.warning("metrics: source %s failed: %r", name, exc)
                ok[name] = 0
        for name, value in ok.items():
            up.add_metric([name], value)
        out.append(up)
        out.append(GaugeMetricFamily("corec_metrics_collect_duration_seconds",
                                     "How long collecting this scrape took.",
                                     value=time.perf_counter() - started))  # fmt: skip
        return out


def build_registry(settings: Settings, **kwargs: Any) -> CollectorRegistry:
    """A registry holding only CoreC's collector (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CorecCollector(settings, **kwargs))
    return registry
