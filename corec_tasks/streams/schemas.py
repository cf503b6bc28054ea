"""Payload validation for CoreC's streams: the framework's models, and the table of
every enabled plugin's (``schemas`` in its plugin.json).

The framework's own streams have models here (seed 004: ``corec_alerts``,
``corec_commands``, ``corec_responses``); a plugin's channels have the models its
manifest names (the trading channels of seed 000: ``plugins/trading/channels.py``).
Extra keys are allowed everywhere: producers add context (a block id, a source
timestamp) and the persister keeps the payload as sent. A stream without a model
carries any JSON object.

Every field follows the strict rules of ``corec_tasks.strict`` (README, "Strict
input"): a number is a JSON number or a plain decimal string, never a boolean or an
odd notation; identifiers match in full; every string has a length bound; a bare
NaN/Infinity anywhere and a payload over ``MAX_PAYLOAD_BYTES`` are refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from corec_tasks.discovery import enabled
from corec_tasks.errors import CorecError, StreamError
from corec_tasks.runtime import runtime
from corec_tasks.settings import load_settings
from corec_tasks.streams import names
from corec_tasks.strict import (
    Key,
    Name,
    NonEmptyText,
    Text,
    reason,
)
from corec_tasks.wiring import stream_schemas


class PayloadError(StreamError):
    """A stream payload failed validation; ``reason`` names the bad key."""

    def __init__(self, reason: str, stream: str | None = None) -> None:
        self.reason = reason
        self.stream = stream
        super().__init__(f"invalid {stream} payload: {reason}" if stream else reason)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


# -- models --------------------------------------------------------------------------


class StreamPayload(BaseModel):
    """Base of every payload model: a JSON object, extra keys kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Alert(StreamPayload):
    """``corec_alerts``: a leveled message from a named source."""

    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ]
    source: Annotated[str, Field(strict=True, min_length=1, max_length=200)]
    message: NonEmptyText


class Command(StreamPayload):
    """``corec_commands``: a command for a plugin, with an ``id`` the response echoes."""

    id: Key
    command: Name
    target: Name | None = None
    args: dict[str, Any] | None = None


class CommandResponse(StreamPayload):
    """``corec_responses``: the answer to command ``id``: a ``response`` or an ``error``."""

    id: Key
    response: Any = None
    error: Text | None = None

    @model_validator(mode="after")
    def _answers(self) -> CommandResponse:
        if "response" not in self.model_fields_set and self.error is None:
            raise ValueError("response: Field required (or error)")
        return self


class AnyObject(StreamPayload):
    """Streams without a model: any JSON object."""


SCHEMAS: Mapping[str, type[StreamPayload]] = MappingProxyType(
    {
        names.ALERTS: Alert,
        names.COMMANDS: Command,
        names.RESPONSES: CommandResponse,
    }
)


def schema_for(stream: str) -> type[BaseModel] | None:
    """The payload model of ``stream`` (unprefixed name): the framework's, else the one
    an enabled plugin declares (``schemas`` in its plugin.json); None: any JSON object."""
    return SCHEMAS.get(stream) or plugin_schemas().get(stream)


def plugin_schemas() -> Mapping[str, type[BaseModel]]:
    """Payload models the enabled plugins declare, for the config file and plugin path
    the environment names now (``COREC_CONFIG``, ``COREC_PLUGIN_PATH``); read once per
    pair and runtime."""
    config = str(Path(os.environ.get("COREC_CONFIG") or "corec_config.json").resolve())
    key = ("corec.plugin_schemas", config, os.environ.get("COREC_PLUGIN_PATH", ""))
    return runtime().service(key, lambda _: _plugin_schemas(config))


def _plugin_schemas(config: str) -> Mapping[str, type[BaseModel]]:
    try:  # the settings of this config file (the process-wide ones may be another's)
        return MappingProxyType(stream_schemas(enabled(load_settings(config))))
    except CorecError:
        return MappingProxyType({})


# -- validation ----------------------------------------------------------------------

# PostgreSQL's JSONB cannot hold U+0000; an escaped backslash before "u0000" is harmless.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


#: A payload larger than this is refused before parsing (a DoS bound; a plugin's model
#: may bound its own fields lower: the seed's packed trading result is at most 1 MiB).
MAX_PAYLOAD_BYTES = 2 << 20


def payload_checker(
    stream: str,
    *,
    model: type[BaseModel] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Callable[[bytes], None]:
    """``check_payload`` bound to one stream, for hot loops (the model is looked up once).

    ``model``: validate by this model (a plugin's consumer checks its own contract,
    whatever the config enables); default ``schema_for(stream)``. ``context`` goes to
    the model's validators (``max_profit_multiple`` for ``trading_results``).
    """
    chosen = model or schema_for(stream) or AnyObject
    validate_json = chosen.__pydantic_validator__.validate_json
    validate: Callable[[bytes], object] = validate_json
    if context:
        validate = partial(validate_json, context=dict(context))

    def check(raw: bytes) -> None:
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"larger than {MAX_PAYLOAD_BYTES} bytes ({len(raw)})", stream)
        try:
            validate(raw)
        except ValidationError as exc:
            raise PayloadError(reason(exc), stream) from None
        if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
            raise PayloadError(
                "contains the escape \\u0000, which PostgreSQL JSONB cannot store", stream
            )
        if (b"NaN" in raw or b"Infinity" in raw) and _has_non_json_constant(raw):
            raise PayloadError(
                "contains NaN or Infinity, which are not JSON (and JSONB cannot store)", stream
            )

    return check


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _has_non_json_constant(raw: bytes) -> bool:
    """Whether ``raw`` holds a bare ``NaN``/``Infinity`` (pydantic's parser accepts them
    anywhere; only typed number fields refuse them). Runs only when the bytes occur."""
    try:
        json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return True
    return False


def check_payload(stream: str, raw: bytes, model: type[BaseModel] | None = None) -> None:
    """Validate ``raw`` (JSON bytes) for ``stream`` (by ``model`` when given); raise
    PayloadError naming the bad key.

    The fast path for consumers that keep the raw bytes: nothing is decoded twice.
    """
    payload_checker(stream, model=model)(raw)


def validate_payload(
    stream: str, raw: bytes, model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Validate ``raw`` for ``stream`` (by ``model`` when given) and return it as a
    dict, exactly as sent."""
    check_payload(stream, raw, model)
    data: dict[str, Any] = json.loads(raw)
    return data
