"""Request bodies are read as strict JSON: a key twice in one object, or a bare
``NaN``/``Infinity``, is a 422 naming it, before any route sees the body.

Python's ``json`` keeps the last of two equal keys, so ``{"amount": "100.00",
"amount": "99999.00"}`` contributed $99,999.00 while a proxy, a log or a signature
check that keeps the first saw $100. RFC 8259 leaves duplicates to the reader; we
refuse them (as I-JSON, RFC 7493, does), anywhere in the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import Request as StarletteRequest

from corec_tasks.strict import shown


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise HTTPException(422, f"body: duplicate key {shown(key)} (each key may appear "
                                     "once in an object)")  # fmt: skip
        out[key] = value
    return out


def _no_constant(name: str) -> NoReturn:
    raise HTTPException(422, f"body: {name} is not JSON (numbers are finite)")


def loads(body: bytes | str) -> Any:
    """``json.loads`` refusing duplicate keys and ``NaN``/``Infinity`` (HTTPException 422)."""
    return json.loads(body, object_pairs_hook=_unique, parse_constant=_no_constant)


class StrictJSONRequest(Request):
    """A request whose ``json()`` is ``loads``: FastAPI reads every JSON body through it."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


Handler = Callable[[StarletteRequest], Coroutine[Any, Any, Response]]


class StrictJSONRoute(APIRoute):
    """A route that hands its handler a ``StrictJSONRequest`` (FastAPI's documented way
    to change how a body is read); an HTTPException raised while reading passes through
    FastAPI's body parsing as it is."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def strict(request: StarletteRequest) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
