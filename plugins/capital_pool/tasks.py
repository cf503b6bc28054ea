"""Celery tasks of the capital pool: ``celery -A corec_tasks call capital_pool.<name>``.

Every task returns JSON: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``,
also for arguments it cannot use (a wrong type, a missing or unknown argument, too many
arguments, an odd number notation, a huge string): each task's arguments are checked
by a strict pydantic model (``corec_tasks.strict`` rules) before anything runs, so a bad
call is answered, never a task failure.
Money actions take an ``idempotency_key``: a repeat (a client retry, or Celery's own
redelivery after a worker died) returns the first result and changes nothing.

    celery -A corec_tasks call capital_pool.contribute --args '["alice", "500.00", "k-1"]'
    celery -A corec_tasks call capital_pool.status
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache, wraps
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError

from corec_tasks.celery import app
from corec_tasks.settings import get_settings
from corec_tasks.strict import Key, UserId, reason
from plugins.capital_pool.money import AmountError, money_str, parse_amount
from plugins.capital_pool.service import CapitalPool
from plugins.capital_pool.settings import capital_config


@lru_cache(maxsize=1)
def pool() -> CapitalPool:
    """This worker process's capital pool (its own connections)."""
    settings = get_settings()
    return CapitalPool(settings, capital_config(settings))


@lru_cache(maxsize=1)
def _aaa() -> Any:
    from plugins.aaa.service import AAAPlugin

    return AAAPlugin.from_url(get_settings().database_url)


def refused(action: str, user_id: object, token: str | None) -> dict[str, Any] | None:
    """With ``auth.require_token``, an error unless ``token`` may do ``action``."""
    if not pool().config.auth.require_token:
        return None
    from plugins.capital_pool.auth import check_token

    return check_token(_aaa(), action, user_id, token)


# -- arguments ------------------------------------------------------------------------


def _amount(value: object) -> Decimal:
    try:
        return parse_amount(value)
    except AmountError as exc:
        raise ValueError(str(exc).removeprefix("amount ")) from None


#: Money: "100", "100.5", "100.50", 100 or 100.5; positive, at most 2 decimals.
Amount = Annotated[Decimal, BeforeValidator(_amount)]
#: A bearer token from /login (AAA: a JWT, base64url parts and dots); bounded.
Token = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9_.=+/-]+$"),
]


class Args(BaseModel):
    """A task's arguments, in positional order; strict, nothing unknown."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MoveArgs(Args):
    user_id: UserId
    amount: Amount
    idempotency_key: Key | None = None
    token: Token | None = None


class MemberArgs(Args):
    user_id: UserId
    token: Token | None = None


class AllocateArgs(Args):
    key: Key | None = None


class ConsumeArgs(Args):
    count: Annotated[int, Field(ge=1, le=10_000)] = 500


class NoArgs(Args):
    pass


class ArgumentError(ValueError):
    """Arguments a task cannot use; the message is the sentence the caller gets."""


def bind(model: type[Args], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Args:
    """Celery's ``args`` and ``kwargs`` as ``model``: ArgumentError says what is wrong."""
    fields = list(model.model_fields)
    if len(args) > len(fields):
        takes = ", ".join(fields) if fields else "no arguments"
        raise ArgumentError(f"takes {len(fields)} argument(s) at most ({takes}), "
                            f"got {len(args)}")  # fmt: skip
    data = dict(zip(fields, args, strict=False))
    twice = sorted(data.keys() & kwargs.keys())
    if twice:
        raise ArgumentError(f"got {', '.join(twice)} both by position and by name")
    data.update(kwargs)
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ArgumentError(reason(exc)) from None


Handler = Callable[..., dict[str, Any]]


def checked(model: type[Args], *, bound: bool = False) -> Callable[[Handler], Handler]:
    """Run the task on its arguments checked by ``model``; answer ``{"ok": false}`` with
    the reason when they do not fit (the task is registered with ``typing=False``, so
    Celery's own arity check never turns a bad call into a task failure). ``bound``: the
    first argument is the task itself (``bind=True``)."""

    def wrap(fn: Handler) -> Handler:
        @wraps(fn)
        def task(*args: Any, **kwargs: Any) -> dict[str, Any]:
            own = args[:1] if bound else ()
            try:
                parsed = bind(model, args[len(own) :], kwargs)
            except ArgumentError as exc:
                return {"ok": False, "error": f"capital_pool.{fn.__name__}: {exc}"}
            return fn(*own, parsed)

        return task

    return wrap


# -- tasks -----------------------------------------------------------------------------


@app.task(name="capital_pool.contribute", typing=False)
@checked(MoveArgs)
def contribute(a: MoveArgs) -> dict[str, Any]:
    """Buy units for ``amount`` (a decimal string, minimum 100.00) at the current NAV.

    Arguments: ``user_id, amount, idempotency_key=None, token=None``.
    """
    return refused("capital.contribute", a.user_id, a.token) or pool().contribute(
        a.user_id, money_str(a.amount), a.idempotency_key
    )


@app.task(name="capital_pool.withdraw", typing=False)
@checked(MoveArgs)
def withdraw(a: MoveArgs) -> dict[str, Any]:
    """Redeem units worth ``amount``, within the member's value and the free cash.

    Arguments: ``user_id, amount, idempotency_key=None, token=None``.
    """
    return refused("capital.withdraw", a.user_id, a.token) or pool().withdraw(
        a.user_id, money_str(a.amount), a.idempotency_key
    )


@app.task(name="capital_pool.status", typing=False)
@checked(NoArgs)
def status(_: NoArgs) -> dict[str, Any]:
    """Equity, cash, active, units, NAV, phase, risk per trade, VIX and every member."""
    return pool().status()


@app.task(name="capital_pool.member", typing=False)
@checked(MemberArgs)
def member(a: MemberArgs) -> dict[str, Any]:
    """One member's units, value, contributed, withdrawn and ROI (``user_id, token=None``)."""
    return refused("capital.view", a.user_id, a.token) or pool().member(a.user_id)


@app.task(bind=True, name="capital_pool.allocate", typing=False)
@checked(AllocateArgs, bound=True)
def allocate(self: Any, a: AllocateArgs) -> dict[str, Any]:
    """Allocate free per-trade slots and publish them on ``capital_data`` (``key=None``).

    Beat calls it every 5 minutes; without ``key`` the task id is the key, so a
    redelivered run allocates nothing twice.
    """
    return pool().allocate(a.key or f"task-{self.request.id}")


@app.task(name="capital_pool.consume", ignore_result=True, typing=False)
@checked(ConsumeArgs)
def consume(a: ConsumeArgs) -> dict[str, Any]:
    """Apply new trading results and record the newest VIX (``count=500``, 1..10000)."""
    from dataclasses import asdict

    from plugins.capital_pool.consumer import consume_once

    return {"ok": True, **asdict(consume_once(pool(), a.count))}


@app.task(name="capital_pool.verify", typing=False)
@checked(NoArgs)
def verify(_: NoArgs) -> dict[str, Any]:
    """Check pool state and members against the ledger and the invariants."""
    return pool().verify()
