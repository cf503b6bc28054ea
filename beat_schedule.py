"""Every periodic job of CoreC, in one place.

Intervals can be tuned from the environment and the config file; each entry expires if no worker
takes it in time, so a stopped cluster does not come back to a backlog of stale
runs. Every job is idempotent, so a second beat started by mistake doubles no effect.
"""

from celery.schedules import crontab

from corec_tasks.settings import get_settings

_settings = get_settings()
_persist_every = _settings.env.persist_every_s
_sync_every = _settings.env.sync_every_s
_intervals = sorted({b.intervalo_s for b in _settings.config.all_blocks()})

beat_schedule = {
    # Streams -> PostgreSQL `eventos`; consumer groups make concurrent runs safe.
    "persist-streams": {
        "task": "corec.streams.persist",
        "schedule": _persist_every,
        "options": {"expires": max(10.0, 4 * _persist_every)},
    },
    # Block results -> `bloques`, for any a cycle's chord callback did not land.
    "persist-block-results": {
        "task": "corec.blocks.persist",
        "schedule": _persist_every,
        "options": {"expires": max(10.0, 4 * _persist_every)},
    },
    # corec_commands -> handlers -> corec_responses (issue 12), answered once per id.
    "dispatch-commands": {
        "task": "corec.commands.dispatch",
        "schedule": 2.0,
        "options": {"expires": 10.0},
    },
    # Entity redirection, merge and split; then the audit over block metrics.
    "redirect-entities": {
        "task": "corec.blocks.redirect",
        "schedule": _sync_every,
        "options": {"expires": _sync_every},
    },
    "audit-blocks": {
        "task": "corec.blocks.audit",
        "schedule": _sync_every,
        "options": {"expires": _sync_every},
    },
    # Capital pool (seed 000): allocation every 5 minutes; trading results and VIX often.
    "capital-allocate": {
        "task": "capital_pool.allocate",
        "schedule": 300.0,
        "options": {"expires": 300.0},
    },
    "capital-consume": {
        "task": "capital_pool.consume",
        "schedule": _persist_every,
        "options": {"expires": max(10.0, 4 * _persist_every)},
    },
    # Partition upkeep: the current month and the next ones, daily and idempotent.
    "partition-upkeep": {
        "task": "corec.db.partitions",
        "schedule": crontab(minute="7", hour="0"),
        "options": {"expires": 3600},
    },
}

# Block cycles, one entry per distinct block interval (`intervalo_s`, default 300 s).
for _interval in _intervals:
    beat_schedule[f"block-cycle-{_interval:g}s"] = {
        "task": "corec.blocks.cycle",
        "schedule": _interval,
        "kwargs": {"interval": _interval, "chunk": _settings.env.block_chunk},
        "options": {"expires": _interval},
    }

# Feeds (seed 000: market_monitor, macro_sync, predictor_temporal), when the plugin is
# enabled. Each tick is keyed by time // interval_s, so a doubled run publishes nothing.
if any(p.name == "feeds" and p.enabled for p in _settings.config.plugins):
    for _name, _task in (("market-tick", "feeds.market_tick"), ("macro-tick", "feeds.macro_tick"),
                         ("predict", "feeds.predict")):  # fmt: skip
        beat_schedule[f"feeds-{_name}"] = {
            "task": _task,
            "schedule": 60.0,
            "options": {"expires": 60.0},
        }

# The trading cycle (seed 003 §7) every global_latency minutes, when the pipeline is enabled.
if any(p.name == "pipeline" and p.enabled for p in _settings.config.plugins):
    from plugins.pipeline.config import trading_config

    _latency_s = 60.0 * trading_config(_settings).global_latency
    beat_schedule["trading-cycle"] = {
        "task": "trading.cycle",
        "schedule": _latency_s,
        "options": {"expires": _latency_s},
    }
