"""The pipeline and core plugins on their seed 003 contracts, over the trading layer
(``plugins.pipeline.cycle.Trading``) of this process. The broker plugins are the
exchanges themselves (``plugins.broker.paper.PaperBroker``, ``...ccxt_adapter``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from corec_tasks.contracts import CoreContract, PipelineContract


def _trading() -> Any:
    from plugins.pipeline.tasks import trading

    return trading()


class PipelineParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_parallel_assets: int = Field(16, ge=1)
    error_retry_count: int = Field(3, ge=0)


class CeleryPipeline(PipelineContract):
    """``execute_portfolio`` fans the portfolio's asset jobs out as Celery groups of
    ``max_parallel_assets``; ``process_asset`` runs one asset here."""

    plugin_name = "celery"
    Params: ClassVar[type[BaseModel] | None] = PipelineParams

    def execute_portfolio(self, portfolio: Any, assets: Any) -> None:
        """``assets``: the cycle's jobs for ``portfolio`` (``Trading.prepare(...).jobs``)."""
        from plugins.pipeline.tasks import dispatch

        jobs = [a for a in assets if a["portfolio_id"] == _id(portfolio)]
        if jobs:
            p = self.params
            assert isinstance(p, PipelineParams)
            dispatch(jobs[0]["cycle"], jobs, p.max_parallel_assets)

    def process_asset(self, asset: Any, strategy_plugin: Any, broker_plugin: Any) -> dict[str, Any]:
        """One asset job through ``strategy_plugin`` (a strategy instance) and
        ``broker_plugin`` (a broker plugin instance); None: the configured ones."""
        from plugins.broker.service import BrokerService

        t = _trading()
        saved = t.strategy_override, t.broker
        try:
            t.strategy_override = strategy_plugin
            if broker_plugin is not None:
                t.broker = BrokerService(t.sessions, broker_plugin, audit=t.audit)
            result: dict[str, Any] = t.process_asset(asset)
            return result
        finally:
            t.strategy_override, t.broker = saved


class CoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    global_latency: float = Field(5, gt=0)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)


class CorePlugin(CoreContract):
    """``start`` serves the HTTP API (a thread) — the loop itself is Celery beat's
    ``trading.cycle`` every ``global_latency`` minutes; ``execute_trading_loop`` runs one
    cycle now and returns when every asset is done."""

    plugin_name = "core"
    Params: ClassVar[type[BaseModel] | None] = CoreParams

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        from corec_tasks.runtime import get_settings
        from plugins.aaa.service import AAAPlugin
        from plugins.core.api import CeleryCapital, create_app

        p = self.params
        assert isinstance(p, CoreParams)
        app = create_app(AAAPlugin.from_url(get_settings().database_url), CeleryCapital())
        self._server = uvicorn.Server(uvicorn.Config(app, host=p.api_host, port=p.api_port))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def execute_trading_loop(self) -> None:
        from plugins.pipeline.cli import run_cycle

        self.last_cycle = run_cycle(f"core-{uuid.uuid4().hex[:12]}")


def _id(portfolio: Any) -> int:
    if isinstance(portfolio, Mapping):
        return int(portfolio["id"])
    return int(getattr(portfolio, "id", portfolio))
