"""Issue 19, part 4: an alert rate-limit marker set by someone with the Redis password
but no CoreC key (pinned with no expiry, or forged with one, or a genuine one copied back
later) silences no alert. On real Redis, the attack made with redis-py alone."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from corec_tasks.commands import drain, registry_for
from corec_tasks.nucleus import Nucleus
from corec_tasks.settings import Settings, load_settings
from corec_tasks.streams import markers
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS, COMMANDS
from corec_tasks.streams.signing import stream_key
from tests.conftest import DATA

pytestmark = pytest.mark.integration


def _alerts(bus: StreamBus, source: str) -> list[dict[str, Any]]:
    return [a["payload"] for a in bus.tail(ALERTS, 50) if a["payload"].get("source") == source]


def test_a_pinned_alert_marker_does_not_silence_signature_alerts(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``corec:alert:stream.signature:corec_commands`` pinned with no expiry before a
    raw command: the ``error`` alert still goes out; so it does past a forged marker
    with an expiry, re-set as often as the attacker likes."""
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "commands_config.json"))
    s = load_settings()
    nucleus = Nucleus(s)
    nucleus.initialize()
    registry = registry_for(nucleus)
    marker = s.key(f"corec:alert:stream.signature:{COMMANDS}")
    raw = {b"d": b'{"id":"x1","command":"status"}', b"i": b"x", b"t": b"%d" % (time.time() * 1e3)}
    with StreamBus(s, redis_client) as bus:
        for pin in ({}, {"ex": 3600}):
            redis_client.delete(s.key(ALERTS))
            redis_client.set(marker, b"1", **pin)  # type: ignore[arg-type]
            redis_client.xadd(s.key(COMMANDS), raw)  # type: ignore[arg-type]
            assert drain(s, redis_client, registry)["dead_lettered"] == 1
            alerts = _alerts(bus, "stream.signature")
            assert len(alerts) == 1 and alerts[0]["level"] == "error", (pin, alerts)
            redis_client.xadd(s.key(COMMANDS), raw)  # type: ignore[arg-type]
            drain(s, redis_client, registry)
            assert len(_alerts(bus, "stream.signature")) == 1  # then rate-limited as designed


def test_a_marker_holds_only_if_sealed_recently_and_expiring(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The rule of ``corec_tasks/streams/markers.py``, at the shipped one hour."""
    key, name, ttl = stream_key(settings), "corec:alert:test:subject", 3600
    t0 = time.time()
    assert markers.take(settings, redis_client, key, name, ttl, t0)
    assert not markers.take(settings, redis_client, key, name, ttl, t0 + 60)
    genuine = redis_client.get(settings.key(name))
    redis_client.persist(settings.key(name))  # pinned: TTL -1
    assert redis_client.ttl(settings.key(name)) == -1
    assert markers.take(settings, redis_client, key, name, ttl, t0 + 120)
    assert redis_client.ttl(settings.key(name)) > 0
    assert genuine is not None
    redis_client.set(settings.key(name), genuine, ex=ttl)  # copied back, an hour later
    assert markers.take(settings, redis_client, key, name, ttl, t0 + ttl + 1)


def test_a_pinned_backlog_marker_does_not_silence_the_backlog_alert(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, redis_client: redis.Redis
) -> None:
    monkeypatch.setenv("COREC_STREAM_MAXLEN", "100")
    s = load_settings()
    for suffix in ("", ":checked"):
        redis_client.set(s.key(f"corec:streams:backlog_alert:probe{suffix}"), b"1")
    with StreamBus(s, redis_client) as bus:
        bus.ensure_group("probe", "stopped")
        bus.publish_many("probe", [{"n": n} for n in range(90)])
        bus.trim("probe")
        alerts = _alerts(bus, "streams")
    assert len(alerts) == 1 and "probe" in alerts[0]["message"], alerts
