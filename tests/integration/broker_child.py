"""A separate process on the broker path, for the crash test.

``python -m tests.integration.broker_child MODE DB_URL REDIS_URL KEY PORTFOLIO ASSET CYCLE PRICE``

MODE ``crash``: execute one open-buy intent with a paper exchange whose orders live in
the Redis hash KEY, and SIGKILL this process right after the exchange accepted the
order, before the order path writes its answer to the database.
MODE ``restart``: a fresh process reconciles, then executes the same intent again.
MODE ``resubmit``: a fresh process executes the same intent again without reconciling.
Prints the results as one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

import redis

from corec_tasks.settings import load_settings
from plugins.broker.paper import PaperBroker, RedisOrderStore
from plugins.broker.service import BrokerService, reconcile
from plugins.trading.db import make_trading_engine, session_factory
from plugins.trading.sealed import Seals


class DyingBroker(PaperBroker):
    """The paper exchange, but the caller dies the instant the submit returns."""

    def submit_order(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        record = super().submit_order(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return record  # never reached


def main(argv: list[str]) -> None:
    mode, db_url, redis_url, key, portfolio, asset, cycle, price = argv
    client = redis.Redis.from_url(redis_url)
    store = RedisOrderStore(client, key, Seals(load_settings(), client))
    config = {"slippage_bps": "10", "fee_bps": "10"}
    broker = DyingBroker(config, store) if mode == "crash" else PaperBroker(config, store)
    engine = make_trading_engine(db_url)
    sessions = session_factory(engine)
    service = BrokerService(sessions, broker)
    action = {
        "action": "open",
        "parameters": {"order_type": "market", "side": "buy", "quantity": "1.5"},
    }
    out: dict[str, Any] = {}
    if mode == "restart":
        with sessions() as db:
            # Alone after a restart: nothing is in flight, so no minimum age.
            out["reconciled"] = reconcile(db, broker, min_age=timedelta(0))
    out["execute"] = service.execute(
        action, int(portfolio), int(asset), Decimal(price), cycle=cycle
    )
    print(json.dumps(out))
    engine.dispose()
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
