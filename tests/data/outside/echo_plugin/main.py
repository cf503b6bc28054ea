"""echo_plugin's entry: its processor ``echo`` (every entity's value is 0.5)."""

from typing import Any

import numpy as np


def echo(ctx: Any) -> tuple[Any, Any]:
    return np.full(len(ctx), 0.5, dtype=np.float32), np.zeros(len(ctx), dtype=bool)


def register_processors(registry: Any) -> None:
    registry.register("echo", echo, kind="vector", description="0.5 for every entity")
