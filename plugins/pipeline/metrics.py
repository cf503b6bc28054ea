"""The trading pipeline's Prometheus metrics: orders by state, and fills.

Read from the ``orders`` table at scrape time (one grouped query): orders are never
deleted and ``filled_quantity`` never decreases (the order path moves a position by
the difference), so counts of created and of filled orders only grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from corec_tasks.metrics.pg import ScrapeConnection
from corec_tasks.settings import Settings
from plugins.trading.models import OrderStatus


class OrderMetrics:
    """``corec_orders{status}``, ``corec_orders_created_total``, ``corec_order_fills_total``."""

    def __init__(self, settings: Settings) -> None:
        self.db = ScrapeConnection(settings.database_url)

    def collect(self) -> Iterator[Metric]:
        rows = self.db.rows(
            "SELECT status::text, count(*), count(*) FILTER (WHERE filled_quantity > 0) "
            "FROM orders GROUP BY status"
        )
        by_status = {str(r[0]).lower(): int(r[1]) for r in rows}
        orders = GaugeMetricFamily("corec_orders", "Orders by state.", labels=["status"])
        for status in OrderStatus:
            orders.add_metric([status.value], by_status.get(status.value, 0))
        yield orders
        yield CounterMetricFamily("corec_orders_created", "Orders created (intents written).",
                                  value=sum(by_status.values()))  # fmt: skip
        yield CounterMetricFamily("corec_order_fills",
                                  "Orders filled in part or in full by the broker.",
                                  value=sum(int(r[2]) for r in rows))  # fmt: skip


def metrics_collectors(settings: Settings, config: dict[str, Any]) -> list[Any]:
    """The plugin's collectors (the exporter's hook)."""
    return [OrderMetrics(settings)]
