"""ModuloEjecucion: queues block processing on Celery, plugin blocks first."""

from __future__ import annotations

from typing import Any, ClassVar

from corec_tasks.blocks.cycle import DEFAULT_CHUNK, dispatch
from corec_tasks.modules.base import Module


class ExecutionModule(Module):
    """Dispatch one cycle (a chord of chunked block tasks) per ``run``."""

    name: ClassVar[str] = "execution"

    def run(
        self,
        *,
        dispatch_id: str | None = None,
        chunk: int = DEFAULT_CHUNK,
        interval: float | None = None,
    ) -> dict[str, Any]:
        n = self.nucleus
        return dispatch(
            n.settings, n.store.r, n.store.metas(), n.plugin_groups,
            dispatch_id=dispatch_id, chunk=chunk, interval=interval,
        )  # fmt: skip
