"""Test plugin: a vectorised processor that sleeps, so a cycle lasts long enough to kill."""

import time

import numpy as np


def slow(ctx):  # type: ignore[no-untyped-def]
    time.sleep(0.05)
    values = np.clip(0.5 + 0.01 * ctx.rng.standard_normal(len(ctx)), 0, 1).astype(np.float32)
    return values, np.zeros(len(ctx), dtype=bool)


def slower(ctx):  # type: ignore[no-untyped-def]
    time.sleep(0.3)
    values = np.clip(0.5 + 0.01 * ctx.rng.standard_normal(len(ctx)), 0, 1).astype(np.float32)
    return values, np.zeros(len(ctx), dtype=bool)


def register_processors(registry):  # type: ignore[no-untyped-def]
    registry.register("slow", slow, kind="vector", description="sleeps 50 ms per block")
    registry.register("slower", slower, kind="vector", description="sleeps 300 ms per block")
