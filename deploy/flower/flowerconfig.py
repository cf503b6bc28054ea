"""Flower's configuration for CoreC: ``celery -A corec_tasks flower --conf=<this file>``,
as ``make flower`` and the compose service start it. Tornado runs this file as Python
when Flower starts, before Flower builds its routes.

Why: Flower's task-apply API (``POST /api/task/apply/<name>``, ``async-apply/<name>``,
``send-task/<name>``) sends any task with any arguments from Flower's own process, which
holds the broker password and the deployment's keys, so whoever holds Flower's basic-auth
password could run anything a worker runs, signed as CoreC. It is off: those routes
answer 403 with a sentence, unless the operator sets ``COREC_FLOWER_TASK_API=1`` (any
value but ``1``, ``0`` or empty stops Flower, naming the variable). The dashboards, the
read API and worker control stay as Flower ships them.

Tornado applies every top-level name of this file that matches a Flower option, so
every name here starts with ``_``.
"""

from __future__ import annotations

import os as _os
from typing import Any as _Any

import tornado.web as _web
from flower import app as _app  # type: ignore[import-untyped]
from flower import urls as _urls
from flower.api import BaseApiHandler as _BaseApiHandler  # type: ignore[import-untyped]
from flower.api import tasks as _tasks

_ENV = "COREC_FLOWER_TASK_API"
_APPLY = (_tasks.TaskApply, _tasks.TaskAsyncApply, _tasks.TaskSend)


class _TaskApiOff(_BaseApiHandler):  # type: ignore[misc]
    """Stands in for each task-apply route: authenticated like it, then 403."""

    @_web.authenticated
    def post(self, *_: _Any) -> None:
        raise _web.HTTPError(
            403,
            f"Flower's task-apply API is off in CoreC (tasks are sent by the CLI, the API "
            f"and beat); the operator turns it on with {_ENV}=1",
        )


def _task_api_on(value: str) -> bool:
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise SystemExit(
        f"{_ENV}: expected 1 (task-apply API on) or 0 / unset (off), got {value[:40]!r}"
    )


def _guard() -> None:
    """Replace the task-apply routes in Flower's own route list, or refuse to start: a
    Flower whose routes moved must not run with the API unguarded."""
    handlers = _urls.handlers
    if _app.default_handlers is not handlers:
        why = "Flower's routes are not where Flower 2.2 keeps them"
        raise SystemExit(f"flowerconfig: {why}; refusing to start unguarded ({_ENV})")
    replaced = 0
    for i, spec in enumerate(handlers):
        if isinstance(spec, tuple) and len(spec) == 2 and spec[1] in _APPLY:
            handlers[i] = (spec[0], _TaskApiOff)
            replaced += 1
    if replaced != len(_APPLY):
        why = f"found {replaced} of Flower's {len(_APPLY)} task-apply routes"
        raise SystemExit(f"flowerconfig: {why}; refusing to start unguarded ({_ENV})")


if not _task_api_on(_os.environ.get(_ENV, "")):
    _guard()
