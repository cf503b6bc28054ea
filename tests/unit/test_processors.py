"""Processors: registry, deterministic randomness, async bound/timeout, built-ins."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from corec_tasks.blocks.builtin import ISOLATION_MODEL_KEY, default_registry
from corec_tasks.blocks.processors import (
    Payload,
    ProcessorContext,
    ProcessorError,
    ProcessorNotFound,
    ProcessorRegistry,
    block_rng,
    processor_for_block,
    reseeded_thread_rng,
    run_async,
)
from corec_tasks.config import BlockConfig
from corec_tasks.errors import CorecError

BUILTINS = ["async_echo", "example", "isolation_forest", "security_node", "sensor_swarm"]


def ctx_for(
    n: int = 100,
    payloads: list[Payload] | None = None,
    cycle: int = 1,
    state: dict[str, Any] | None = None,
) -> ProcessorContext:
    return ProcessorContext.create(
        "blk", cycle, np.arange(n, dtype=np.uint32), 1, np.zeros(n, np.float32), payloads, state
    )


# -- registry ---------------------------------------------------------------------------


def test_registry_register_get_and_decorator() -> None:
    reg = ProcessorRegistry()

    def flat(ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        """Half everywhere."""
        return np.full(len(ctx), 0.5, np.float32), np.zeros(len(ctx), bool)

    spec = reg.register("flat", flat)
    assert (spec.kind, spec.description, spec.smart) == ("vector", "Half everywhere.", False)

    @reg.register("echo", needs_payload=True)
    async def echo(entity_id: int, payload: Payload | None) -> float:
        return 0.0

    assert echo.__name__ == "echo"  # the decorator returns the function itself
    assert reg.get("echo").kind == "async" and reg.get("echo").needs_payload
    assert reg.names() == ["echo", "flat"] and "flat" in reg
    with pytest.raises(ProcessorError, match="already registered"):
        reg.register("flat", flat)
    assert reg.register("flat", flat, replace=True).name == "flat"


def test_registry_miss_names_the_known_processors() -> None:
    reg = default_registry()
    with pytest.raises(ProcessorNotFound) as info:
        reg.get("nope")
    assert isinstance(info.value, CorecError)
    assert str(info.value) == (
        "processor 'nope' is not registered; known processors: " + ", ".join(BUILTINS)
    )
    with pytest.raises(ProcessorNotFound, match=r"\(none\)"):
        ProcessorRegistry().get("x")


def test_default_registry_is_new_each_time() -> None:
    one, two = default_registry(), default_registry()
    assert one.names() == BUILTINS
    one.register("extra", lambda ctx: ctx)
    assert "extra" not in two
    assert one.get("isolation_forest").smart
    assert one.get("async_echo").kind == "async"


@pytest.mark.parametrize(
    ("block_id", "canal", "procesador", "expected"),
    [
        ("enjambre_sensor", 4, None, "sensor_swarm"),
        ("x", 1, None, "sensor_swarm"),
        ("nodo_seguridad", 2, None, "security_node"),
        ("ia_analisis", 3, None, "isolation_forest"),
        ("example_block", 4, None, "example"),
        ("enjambre_sensor", 1, "mine", "mine"),
    ],
)
def test_processor_for_block(
    block_id: str, canal: int, procesador: str | None, expected: str
) -> None:
    block = BlockConfig(id=block_id, canal=canal, entidades=10, procesador=procesador)
    assert processor_for_block(block) == expected


# -- randomness -------------------------------------------------------------------------


def test_rng_is_deterministic_per_block_cycle() -> None:
    a = block_rng("b1", 5).random(8)
    assert np.array_equal(a, block_rng("b1", 5).random(8))
    assert np.array_equal(a, reseeded_thread_rng("b1", 5).random(8))
    assert not np.array_equal(a, block_rng("b1", 6).random(8))
    assert not np.array_equal(a, block_rng("b2", 5).random(8))


# -- async per-entity processors --------------------------------------------------------


def test_async_concurrency_never_exceeds_the_bound() -> None:
    running = peak = 0

    async def slow(entity_id: int, payload: Payload | None) -> float:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.002)
        running -= 1
        return 0.5

    values, errors = run_async(slow, ctx_for(60), concurrency=7)
    assert peak == 7
    assert not errors.any() and np.all(values == 0.5)


def test_async_timeout_and_exceptions_mark_errors_without_raising() -> None:
    async def flaky(entity_id: int, payload: Payload | None) -> float:
        if entity_id % 3 == 0:
            await asyncio.sleep(5)
        if entity_id % 3 == 1:
            raise RuntimeError("boom")
        return float("nan") if entity_id == 5 else entity_id / 100

    values, errors = run_async(flaky, ctx_for(12), timeout_s=0.05)
    assert errors.tolist() == [i % 3 != 2 or i == 5 for i in range(12)]
    assert values[2] == pytest.approx(0.02) and values[8] == pytest.approx(0.08)


def test_run_async_works_inside_a_running_loop() -> None:
    async def one(entity_id: int, payload: Payload | None) -> float:
        return 0.25

    async def caller() -> tuple[np.ndarray, np.ndarray]:
        return run_async(one, ctx_for(5))

    values, errors = asyncio.run(caller())
    assert not errors.any() and np.all(values == 0.25)


def test_payload_entities_get_payloads_round_robin_or_error() -> None:
    seen: list[tuple[int, Any]] = []

    async def uses(entity_id: int, payload: Payload | None) -> float:
        seen.append((entity_id, payload))
        return 0.5

    payloads: list[Payload] = [{"valor": 0.1}, {"valor": 0.2}]
    _, errors = run_async(uses, ctx_for(5, payloads), concurrency=1)
    assert not errors.any()
    assert sorted(seen, key=lambda s: s[0]) == [(i, payloads[i % 2]) for i in range(5)]
    seen.clear()
    for ctx, needs in [(ctx_for(4, []), False), (ctx_for(4, None), True)]:
        _, errors = run_async(uses, ctx, needs_payload=needs)
        assert errors.all() and not seen  # never called without a payload


def test_async_echo() -> None:
    echo = default_registry().get("async_echo").fn
    values, errors = run_async(echo, ctx_for(4, [{"valor": 0.75}]))  # type: ignore[arg-type]
    assert not errors.any() and np.all(values == 0.75)
    values, errors = run_async(echo, ctx_for(50))  # type: ignore[arg-type]
    assert not errors.any() and np.all((values >= 0) & (values < 1))
    assert len(set(values.tolist())) > 40


# -- built-in vector processors ---------------------------------------------------------


def call(name: str, ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
    fn = default_registry().get(name).fn
    return fn(ctx)  # type: ignore[call-arg,return-value]


def test_sensor_swarm_bounded_with_rare_faults() -> None:
    values, errors = call("sensor_swarm", ctx_for(100_000))
    assert values.dtype == np.float32 and errors.dtype == np.bool_
    assert values.min() >= 0 and values.max() <= 1
    assert 0.005 < errors.mean() < 0.015
    # Mean reversion: from 0, one step lands around 0.25 with sd ~0.05.
    assert values.mean() == pytest.approx(0.25, abs=0.01)
    assert values.std() == pytest.approx(0.05, abs=0.01)
    again, _ = call("sensor_swarm", ctx_for(100_000))
    assert np.array_equal(values, again)


def test_security_node_modes() -> None:
    values, errors = call("security_node", ctx_for(1000))
    assert not errors.any() and values.min() >= 0 and values.max() <= 1
    values, errors = call("security_node", ctx_for(10, []))
    assert errors.all()
    payloads: list[Payload] = [{"price": 1.0}] * 30 + [{"price": 100.0}, {"other": "x"}]
    values, errors = call("security_node", ctx_for(64, payloads))
    assert errors.tolist() == [i % 32 == 31 for i in range(64)]
    assert values[30] > 0.9 and values[0] < 0.01  # the outlier payload is the threat


def test_isolation_forest_fits_once_and_scores_in_unit_interval() -> None:
    state: dict[str, Any] = {}
    values, errors = call("isolation_forest", ctx_for(500, state=state))
    model = state[ISOLATION_MODEL_KEY]
    assert not errors.any() and values.min() >= 0 and values.max() <= 1
    again, _ = call("isolation_forest", ctx_for(500, state=state))
    assert state[ISOLATION_MODEL_KEY] is model and np.array_equal(values, again)
    fresh, _ = call("isolation_forest", ctx_for(500, state={}))
    assert np.array_equal(values, fresh)  # every worker fits the same model


def test_example_processor() -> None:
    values, errors = call("example", ctx_for(100))
    assert not errors.any() and values.min() >= 0.4 and values.max() <= 0.6
