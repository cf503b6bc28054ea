"""The built-in entity processors, and a registry holding them.

They are the seed's sample blocks' functions (sensor swarms, security nodes, an
IsolationForest smart block, a trivial example and an async echo); the processor
contract and the registry they are registered in live in
``corec_tasks.blocks.processors``, so a plugin's processors and these are peers.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from corec_tasks.blocks.processors import (
    F32,
    Mask,
    Payload,
    ProcessorContext,
    ProcessorRegistry,
    payload_value,
)

#: sensor_swarm: mean reversion per run, noise scale, and fault probability.
SENSOR_REVERSION = 0.5
SENSOR_NOISE = 0.05
SENSOR_FAULT_RATE = 0.01
_NOISE_SPAN = 2.0 * math.sqrt(3.0) * SENSOR_NOISE  # uniform on ±span/2 has sd SENSOR_NOISE


def _mean_revert(ctx: ProcessorContext) -> tuple[F32, F32]:
    """``(reading, u)``: one AR(1) step around 0.5 clipped to [0, 1], and its uniforms.

    The noise is uniform with standard deviation :data:`SENSOR_NOISE` (uniform on
    [-a, a] has sd a/√3): one uniform draw costs ~2 µs per 1,000 entities against
    ~10 µs for a gaussian one, and the same draw also decides faults; averaged over
    the AR(1) steps the reading's spread is close to normal anyway.
    """
    u = ctx.rng.random(len(ctx), dtype=np.float32)
    # In place on float32: a 1,000-entity block costs a handful of allocations.
    values = u - 0.5
    values *= _NOISE_SPAN
    values += ctx.prev_values * (1.0 - SENSOR_REVERSION)
    values += 0.5 * SENSOR_REVERSION
    np.maximum(values, 0.0, out=values)
    np.minimum(values, 1.0, out=values)
    return values, u


def sensor_swarm(ctx: ProcessorContext) -> tuple[F32, Mask]:
    """A noisy bounded reading mean-reverting to 0.5; ~1% of readings fault."""
    values, u = _mean_revert(ctx)
    # The faulting draws are the lowest noise draws, but a fault's value is discarded.
    return values, u < SENSOR_FAULT_RATE


def security_node(ctx: ProcessorContext) -> tuple[F32, Mask]:
    """A threat score in [0, 1]: logistic of how far a reading lies past 3 sigma.

    With payloads the reading is each payload's value z-scored across the payloads;
    without, a standard normal draw per entity.
    """
    n = len(ctx)
    if ctx.payloads is None:
        z = ctx.rng.standard_normal(n)
        errors = np.zeros(n, dtype=np.bool_)
    elif not ctx.payloads:
        return np.zeros(n, dtype=np.float32), np.ones(n, dtype=np.bool_)
    else:
        x = np.array([payload_value(p) for p in ctx.payloads], dtype=np.float64)
        ok = np.isfinite(x)
        z = np.zeros_like(x)
        if ok.any():
            sd = float(x[ok].std())
            z[ok] = (x[ok] - x[ok].mean()) / sd if sd > 0 else 0.0
        pick = np.arange(n) % x.shape[0]
        z, errors = z[pick], ~ok[pick]
    score = 1.0 / (1.0 + np.exp(-2.0 * (np.abs(z) - 3.0)))
    return score.astype(np.float32), errors


ISOLATION_MODEL_KEY = "isolation_forest"


def isolation_forest(ctx: ProcessorContext) -> tuple[F32, Mask]:
    """Anomaly score in [0, 1] of each entity's (reading, change) under an IsolationForest.

    The model lives in ``ctx.state`` and is fitted once, lazily, on fixed synthetic
    normal behaviour, so every worker fits the same model.
    """
    model = ctx.state.get(ISOLATION_MODEL_KEY)
    if model is None:
        # Here: scikit-learn takes a second to import and only this smart block needs it.
        from sklearn.ensemble import IsolationForest

        train = np.random.default_rng(0).normal([0.5, 0.0], [0.05, 0.05], size=(1024, 2))
        model = IsolationForest(n_estimators=25, max_samples=256, random_state=0).fit(train)
        ctx.state[ISOLATION_MODEL_KEY] = model
    reading, _ = _mean_revert(ctx)
    features = np.column_stack([reading, reading - ctx.prev_values]).astype(np.float64)
    # score_samples is minus the paper's anomaly score s(x) = 2^(-E[h(x)]/c(n)) in (0, 1].
    score = np.clip(-model.score_samples(features), 0.0, 1.0).astype(np.float32)
    return score, ~np.isfinite(score)


def example(ctx: ProcessorContext) -> tuple[F32, Mask]:
    """A trivial smooth value around 0.5 from the id and the cycle."""
    values = 0.5 + 0.05 * np.sin(ctx.ids.astype(np.float32) + np.float32(ctx.cycle % 1024))
    return values.astype(np.float32), np.zeros(len(ctx), dtype=np.bool_)


async def async_echo(entity_id: int, payload: Payload | None) -> float:
    """The payload's value, or a hash of the id in [0, 1) (exercises the async path)."""
    await asyncio.sleep(0)
    if payload is not None:
        return payload_value(payload)
    return ((entity_id * 2654435761) & 0xFFFFFFFF) / 2**32


def default_registry() -> ProcessorRegistry:
    """A new registry holding the built-in processors."""
    registry = ProcessorRegistry()
    registry.register("sensor_swarm", sensor_swarm)
    registry.register("security_node", security_node)
    registry.register("isolation_forest", isolation_forest, smart=True)
    registry.register("example", example)
    registry.register("async_echo", async_echo)
    return registry
