"""Engine alerts on corec_alerts (one per incident) and max_size_mb enforced, on real Redis."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
import redis

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.engine import Engine
from corec_tasks.blocks.model import BlockTooLarge, specs_from_config
from corec_tasks.blocks.processors import ProcessorContext
from corec_tasks.blocks.store import BlockStore
from corec_tasks.config import BlockConfig
from corec_tasks.modules.sync import RedirectError, merge, redirect
from corec_tasks.settings import Settings
from corec_tasks.streams.names import ALERTS
from corec_tasks.streams.schemas import validate_payload

pytestmark = pytest.mark.integration


def _half_fail(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
    n = len(ctx)
    return np.full(n, 0.5, np.float32), np.arange(n) % 2 == 0


def _raises(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
    raise RuntimeError("plugin bug")


def _alerts(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    return [validate_payload(ALERTS, f[b"d"]) for _, f in client.xrange(settings.key(ALERTS))]


def test_each_engine_alert_kind_is_raised_once_per_incident(
    settings: Settings, redis_client: redis.Redis
) -> None:
    registry = default_registry()
    registry.register("half_fail", _half_fail)
    registry.register("raises", _raises)
    store = BlockStore(settings, redis_client)
    configs = [BlockConfig(id="flaky", canal=1, entidades=100, procesador="half_fail"),
               BlockConfig(id="broken", canal=1, entidades=300, entidades_por_bloque=100,
                           procesador="raises"),
               BlockConfig(id="fine", canal=1, entidades=100)]  # fmt: skip
    store.create(specs_from_config(configs))
    engine = Engine(settings, store, registry)
    for cycle in (1, 2, 3):
        engine.run_blocks(store.ids(), cycle, float(cycle))
    alerts = _alerts(redis_client, settings)
    by = Counter((a["source"], a["subject"]) for a in alerts)
    # The failing plugin: one alert for its processor, not one per block or per cycle.
    assert by[("plugin", "raises")] == 1
    assert by[("block.unhealthy", "flaky")] == 1
    assert by[("block.self_repair", "flaky")] == 1
    assert not any(a.get("block_id") == "fine" for a in alerts)
    assert all(v == 1 for v in by.values()), by
    plugin = next(a for a in alerts if a["source"] == "plugin")
    assert plugin["level"] == "error" and "plugin bug" in plugin["message"]


def test_max_size_mb_is_refused_at_registration_redirection_and_merge(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # 100,000 entities need 1,100,008 bytes of state: above 1 MB.
    too_big = BlockConfig(id="big", canal=1, entidades=100_000, entidades_por_bloque=100_000)
    with pytest.raises(BlockTooLarge, match="above its max_size_mb"):
        specs_from_config([too_big])
    # 0.01 MB = 10,485 bytes: at most 952 entities.
    small = BlockConfig(id="small", canal=1, entidades=900, max_size_mb=0.01)
    other = BlockConfig(id="other", canal=1, entidades=200)
    store = BlockStore(settings, redis_client)
    store.create(specs_from_config([small, other]))
    with pytest.raises(RedirectError, match="at most 952 entities"):
        redirect(store, "other", "small", 100)
    with pytest.raises(RedirectError, match="max_size_mb"):
        merge(store, "small", "other")
    sizes = {m["spec"]["id"]: m["num_entidades"] for m in store.metas()}
    assert sizes == {"small": 900, "other": 200}  # refused, nothing truncated
    assert redirect(store, "other", "small", 52) == 52  # up to the cap is fine
