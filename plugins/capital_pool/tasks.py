"""Celery tasks of the capital pool: ``celery -A corec_tasks call capital_pool.<name>``.

Every task returns JSON: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``,
also for arguments it cannot use (a wrong type, a missing or unknown argument, too many
arguments, an odd number notation, a huge string): each task's arguments are checked
by a strict pydantic model (``corec_tasks.strict`` rules) before anything runs, so a bad
call is answered, never a task failure.
Money actions take an ``idempotency_key``: a repeat (a client retry, or Celery's own
redelivery after a worker died) returns the first result and changes nothing.

The broker is not a way in: ``contribute`` and ``withdraw`` run only with a *grant*
(``grants.py``) for exactly that member, action, amount and key, which the API mints for
its logged-in user and an operator mints with ``corec capital grant``; without one, or
with one that is forged, expired, used by another task or made for anything else, the
task answers ``{"ok": false}`` and moves nothing. Every outcome is in ``audit_log``.

    G=$(corec capital grant alice contribute 500.00 k-1)
    celery -A corec_tasks call capital_pool.contribute --args '["alice", "500.00", "k-1"]' \\
        --kwargs "{\"grant\": \"$G\"}"
    celery -A corec_tasks call capital_pool.status
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import Annotated, Any

import redis
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError

from corec_tasks.celery import app
from corec_tasks.errors import CorecError
from corec_tasks.strict import Key, UserId, reason
from plugins.capital_pool import audit, grants
from plugins.capital_pool.money import AmountError, money_str, parse_amount
from plugins.capital_pool.runtime import grant_key, pool

# -- arguments ------------------------------------------------------------------------


def _amount(value: object) -> Decimal:
    try:
        return parse_amount(value)
    except AmountError as exc:
        raise ValueError(str(exc).removeprefix("amount ")) from None


#: Money: "100", "100.5", "100.50", 100 or 100.5; positive, at most 2 decimals.
Amount = Annotated[Decimal, BeforeValidator(_amount)]
#: A grant (``grants.py``: a JWT, base64url parts and dots); bounded.
Grant = Annotated[
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
    grant: Grant | None = None


class MemberArgs(Args):
    user_id: UserId


class AllocateArgs(Args):
    key: Key | None = None


class ConsumeArgs(Args):
    count: Annotated[int, Field(ge=1, le=10_000)] = 500


class NoArgs(Args):
    pass


class ArgumentError(CorecError, ValueError):
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


def checked(model: type[Args], *, bound: bool = False,
            audited: bool = False) -> Callable[[Handler], Handler]:  # fmt: skip
    """Run the task on its arguments checked by ``model``; answer ``{"ok": false}`` with
    the reason when they do not fit (the task is registered with ``typing=False``, so
    Celery's own arity check never turns a bad call into a task failure). ``bound``: the
    first argument is the task itself (``bind=True``); ``audited``: a money task, whose
    refusal is written to ``audit_log`` too."""

    def wrap(fn: Handler) -> Handler:
        @wraps(fn)
        def task(*args: Any, **kwargs: Any) -> dict[str, Any]:
            own = args[:1] if bound else ()
            try:
                parsed = bind(model, args[len(own) :], kwargs)
            except ArgumentError as exc:
                error = f"capital_pool.{fn.__name__}: {exc}"
                if not audited:
                    return {"ok": False, "error": error}
                given = dict(zip(model.model_fields, args[len(own) :], strict=False)) | kwargs
                return _refuse(own[0] if own else None, fn.__name__, given.get("user_id"),
                               given.get("amount"), given.get("idempotency_key"), error)
            return fn(*own, parsed)

        return task

    return wrap


# -- tasks -----------------------------------------------------------------------------


def _refuse(task: Any, kind: str, user_id: object, amount: object, key: object,
            reason: str) -> dict[str, Any]:  # fmt: skip
    """A money task's refusal before the ledger, audited (principal ``celery:unverified``)."""
    task_id = getattr(getattr(task, "request", None), "id", None)
    return pool().refuse(kind, user_id, amount, key, principal=audit.UNVERIFIED, reason=reason,
                         task_id=task_id)  # fmt: skip


def _move(task: Any, kind: str, a: MoveArgs) -> dict[str, Any]:
    """Verify the grant (single use, by this task id: a redelivery passes), then apply as
    its principal; a grant that does not verify moves nothing and is audited."""
    p = pool()
    try:
        who = grants.verify(
            a.grant, a.user_id, f"capital.{kind}", a.amount, a.idempotency_key,
            key=grant_key(), redis_client=p.redis, settings=p.settings, use_id=task.request.id,
        )  # fmt: skip
    except grants.GrantError as exc:
        return _refuse(task, kind, a.user_id, a.amount, a.idempotency_key,
                       f"capital_pool.{kind}: {exc}")  # fmt: skip
    except (CorecError, redis.RedisError) as exc:  # no grant key, or Redis unreachable
        out = _refuse(task, kind, a.user_id, a.amount, a.idempotency_key,
                      f"capital_pool.{kind}: the grant cannot be checked now ({exc}); retry")
        return {**out, "retry": True}
    result: dict[str, Any] = getattr(p, kind)(a.user_id, money_str(a.amount),
                                              a.idempotency_key, principal=who.principal)
    return result


@app.task(bind=True, name="capital_pool.contribute", typing=False)
@checked(MoveArgs, bound=True, audited=True)
def contribute(self: Any, a: MoveArgs) -> dict[str, Any]:
    """Buy units for ``amount`` (a decimal string, minimum 100.00) at the current NAV.

    Arguments: ``user_id, amount, idempotency_key, grant``; the last two are required in
    effect (a grant names its key; ``corec capital grant`` prints one).
    """
    return _move(self, "contribute", a)


@app.task(bind=True, name="capital_pool.withdraw", typing=False)
@checked(MoveArgs, bound=True, audited=True)
def withdraw(self: Any, a: MoveArgs) -> dict[str, Any]:
    """Redeem units worth ``amount``, within the member's value and the free cash.

    Arguments: ``user_id, amount, idempotency_key, grant``.
    """
    return _move(self, "withdraw", a)


@app.task(name="capital_pool.status", typing=False)
@checked(NoArgs)
def status(_: NoArgs) -> dict[str, Any]:
    """Equity, cash, active, units, NAV, phase, risk per trade, VIX and every member."""
    return pool().status()


@app.task(name="capital_pool.member", typing=False)
@checked(MemberArgs)
def member(a: MemberArgs) -> dict[str, Any]:
    """One member's units, value, contributed, withdrawn and ROI (``user_id``)."""
    return pool().member(a.user_id)


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
