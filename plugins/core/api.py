"""The core plugin's HTTP API (FastAPI): login, capital, portfolios, orders, positions,
health and Prometheus metrics. ``corec api`` serves it with uvicorn; ``/docs`` and
``/openapi.json`` describe it.

Every route but ``/login``, ``/health`` and ``/metrics`` needs ``Authorization: Bearer
<token>`` from ``/login``; the AAA plugin verifies it and authorises the action (a
member moves only their own capital), and audits both. Capital actions go to the
``capital_pool`` Celery tasks by default (``CeleryCapital``), so the API server holds
no ledger connection; ``DirectCapital`` calls the same service in-process (one node).
Capital members are named by their AAA username.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run
# time, and the dependency aliases (Who, Db) are local to create_app.
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from corec_tasks.strict import USER_ID_MAX, USER_ID_PATTERN, Key, MoneyText, UserId, reason_of
from plugins.aaa.errors import AAAError, AuthenticationError, AuthorizationError, TokenError
from plugins.aaa.service import AAAPlugin
from plugins.aaa.tokens import Claims
from plugins.trading.models import Order, Portfolio, Position, Role, User


class Capital(Protocol):
    """What the API needs of the capital pool (JSON results, ``ok`` true or false)."""

    def contribute(
        self, user_id: str, amount: str, key: str, token: str | None = None
    ) -> dict[str, Any]: ...
    def withdraw(
        self, user_id: str, amount: str, key: str, token: str | None = None
    ) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def member(self, user_id: str) -> dict[str, Any]: ...


class CeleryCapital:
    """The capital_pool Celery tasks, waited for (``timeout`` s)."""

    def __init__(self, timeout: float = 30.0) -> None:
        from corec_tasks.celery import app

        self.app = app
        self.timeout = timeout

    def _call(self, task: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        pending = self.app.send_task(task, args=list(args), kwargs=kwargs)
        result: dict[str, Any] = pending.get(timeout=self.timeout)
        return result

    def contribute(
        self, user_id: str, amount: str, key: str, token: str | None = None
    ) -> dict[str, Any]:
        """The caller's token goes along: the task checks it when it requires one."""
        return self._call("capital_pool.contribute", user_id, amount, key, token=token)

    def withdraw(
        self, user_id: str, amount: str, key: str, token: str | None = None
    ) -> dict[str, Any]:
        return self._call("capital_pool.withdraw", user_id, amount, key, token=token)

    def status(self) -> dict[str, Any]:
        return self._call("capital_pool.status")

    def member(self, user_id: str) -> dict[str, Any]:
        return self._call("capital_pool.member", user_id)


class DirectCapital:
    """The same service the tasks call, in this process (``pool``, or one built from
    the process's settings)."""

    def __init__(self, pool: Any = None) -> None:
        if pool is None:
            from corec_tasks.settings import get_settings
            from plugins.capital_pool.service import CapitalPool
            from plugins.capital_pool.settings import capital_config

            settings = get_settings()
            pool = CapitalPool(settings, capital_config(settings))
        self.pool = pool

    def contribute(
        self, user_id: str, amount: str, key: str, token: str | None = None
    ) -> dict[str, Any]:
        return self.pool.contribute(user_id, amount, key)

    def withdraw(
        self, user_id: str, amount: str, key: str, token: str | None = None
    ) -> dict[str, Any]:
        return self.pool.withdraw(user_id, amount, key)

    def status(self) -> dict[str, Any]:
        return self.pool.status()

    def member(self, user_id: str) -> dict[str, Any]:
        return self.pool.member(user_id)


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class CapitalIn(BaseModel):
    """A contribution or withdrawal: strict (``corec_tasks.strict``), nothing unknown."""

    model_config = ConfigDict(extra="forbid")

    amount: MoneyText = Field(
        description='Dollars as a decimal string of ASCII digits, at most 2 decimals, e.g. '
        '"500.00" (no spaces, exponent, "_" or other digit scripts)'
    )
    idempotency_key: Key
    user: UserId | None = Field(None, description="Member (username); default: yourself")


def create_app(
    aaa: AAAPlugin,
    capital: Capital,
    *,
    health_checks: dict[str, Callable[[], Any]] | None = None,
) -> FastAPI:
    """The API on ``aaa`` (its database holds users, portfolios, orders, positions)."""
    app = FastAPI(
        title="CoreC API",
        version="1.0",
        description="Capital pool, portfolios, orders and positions of CoreC.",
    )
    registry = CollectorRegistry()
    requests = Counter("corec_api_requests", "HTTP requests", ["method", "route", "status"],
                       registry=registry)  # fmt: skip
    latency = Histogram("corec_api_request_seconds", "HTTP request latency", ["route"],
                        registry=registry)  # fmt: skip
    capital_actions = Counter("corec_api_capital_actions", "Capital actions", ["action", "ok"],
                              registry=registry)  # fmt: skip
    bearer = HTTPBearer(auto_error=False)
    sessions = aaa._sessions

    @app.middleware("http")
    async def _measure(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        latency.labels(path).observe(time.perf_counter() - t0)
        requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.exception_handler(AAAError)
    async def _aaa_error(_: Request, exc: AAAError) -> JSONResponse:
        if isinstance(exc, AuthorizationError):
            code = 403
        elif isinstance(exc, TokenError | AuthenticationError):
            code = 401
        else:
            code = 400
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One sentence, the input cut short: never FastAPI's echo of the whole body.
        return JSONResponse({"ok": False, "error": reason_of(exc.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"ok": False, "error": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)  # fmt: skip

    def db() -> Iterator[Session]:
        with sessions() as session:
            yield session

    def claims(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Claims:
        if creds is None:
            raise HTTPException(401, "a bearer token is required: POST /login first",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return aaa.verify(creds.credentials)

    Who = Annotated[Claims, Depends(claims)]
    Raw = Annotated[HTTPAuthorizationCredentials, Depends(bearer)]
    Db = Annotated[Session, Depends(db)]

    def user_id_of(session: Session, username: str) -> int:
        uid = session.scalar(select(User.id).where(User.username == username))
        if uid is None:
            raise HTTPException(404, f"no user {username!r}")
        return uid

    @app.post("/login", response_model=TokenOut)
    def login(body: LoginIn) -> TokenOut:
        """A bearer token for ``username`` (lockout after repeated failures)."""
        token = aaa.authenticate(body.username, body.password)
        return TokenOut(access_token=token, expires_in=aaa.config.session_timeout)

    @app.post("/logout")
    def logout(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> dict[str, Any]:
        """Revoke this token's session."""
        if creds is None:
            raise HTTPException(401, "a bearer token is required")
        aaa.logout(creds.credentials)
        return {"ok": True}

    @app.get("/health")
    def health() -> JSONResponse:
        """Liveness of the API and of what it depends on."""
        checks: dict[str, Any] = {}
        ok = True
        for name, check in (health_checks or {}).items():
            try:
                checks[name] = {"ok": True, "detail": check()}
            except Exception as exc:  # a health check reports, never raises
                ok = False
                checks[name] = {"ok": False, "error": str(exc)}
        return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics of this API process."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/capital/status")
    def capital_status(who: Who) -> dict[str, Any]:
        """The pool: equity, cash, active, units, NAV, phase, risk, VIX; members' shares
        for admins, only your own for others."""
        aaa.authorize(who, "pool.view")
        status = capital.status()
        if status.get("ok") and who.role is not Role.ADMIN:
            own = status.get("members", {}).get(who.username)
            status["members"] = {who.username: own} if own else {}
        return status

    Member = Annotated[str, Path(max_length=USER_ID_MAX, pattern=USER_ID_PATTERN)]

    @app.get("/capital/members/{user}")
    def capital_member(user: Member, who: Who, session: Db) -> JSONResponse:
        """One member's units, value, contributed, withdrawn and ROI."""
        aaa.authorize(who, "capital.view", user_id=user_id_of(session, user))
        return _answer(capital.member(user))

    def _move(
        action: str, body: CapitalIn, who: Claims, session: Session, token: str
    ) -> JSONResponse:
        user = body.user or who.username
        aaa.authorize(who, f"capital.{action}", user_id=user_id_of(session, user))
        result = getattr(capital, action)(user, body.amount, body.idempotency_key, token)
        capital_actions.labels(action, str(bool(result.get("ok"))).lower()).inc()
        aaa.audit(who.user_id, f"capital.{action}.result",
                  {"user": user, "amount": body.amount, "key": body.idempotency_key,
                   "ok": result.get("ok"), "error": result.get("error")})  # fmt: skip
        return _answer(result)

    @app.post("/capital/contribute")
    def contribute(body: CapitalIn, who: Who, session: Db, raw: Raw) -> JSONResponse:
        """Buy units for ``amount`` (idempotent per key)."""
        return _move("contribute", body, who, session, raw.credentials)

    @app.post("/capital/withdraw")
    def withdraw(body: CapitalIn, who: Who, session: Db, raw: Raw) -> JSONResponse:
        """Redeem units worth ``amount`` (idempotent per key)."""
        return _move("withdraw", body, who, session, raw.credentials)

    def _mine(who: Claims, action: str, session: Session) -> list[int] | None:
        """Portfolio ids the caller may read (None: all, for admins and viewers)."""
        aaa.authorize(who, action, user_id=who.user_id)
        if who.role is not Role.MEMBER:
            return None
        return list(session.scalars(select(Portfolio.id).where(Portfolio.user_id == who.user_id)))

    @app.get("/portfolios")
    def portfolios(who: Who, session: Db) -> list[dict[str, Any]]:
        """Portfolios (a member sees their own)."""
        ids = _mine(who, "portfolio.view", session)
        query = select(Portfolio).order_by(Portfolio.id)
        if ids is not None:
            query = query.where(Portfolio.id.in_(ids))
        return [_row(p, ("id", "user_id", "name", "base_currency", "capital", "is_active"))
                for p in session.scalars(query)]  # fmt: skip

    @app.get("/orders")
    def orders(who: Who, session: Db, limit: int = 100) -> list[dict[str, Any]]:
        """The newest orders (a member sees their portfolios')."""
        ids = _mine(who, "order.view", session)
        query = select(Order).order_by(Order.id.desc()).limit(min(max(limit, 1), 1000))
        if ids is not None:
            query = query.where(Order.portfolio_id.in_(ids))
        cols = ("id", "client_order_id", "portfolio_id", "asset_id", "side", "order_type",
                "quantity", "price", "status", "filled_quantity", "average_fill_price")  # fmt: skip
        return [_row(o, cols) for o in session.scalars(query)]

    @app.get("/positions")
    def positions(who: Who, session: Db) -> list[dict[str, Any]]:
        """Open positions (a member sees their portfolios')."""
        ids = _mine(who, "position.view", session)
        query = select(Position).order_by(Position.id)
        if ids is not None:
            query = query.where(Position.portfolio_id.in_(ids))
        return [
            _row(p, [c.key for c in Position.__table__.columns]) for p in session.scalars(query)
        ]

    return app


def _answer(result: dict[str, Any]) -> JSONResponse:
    """A capital result: 200 when ok, 400 with its error sentence when refused, 503 to retry."""
    if result.get("ok"):
        return JSONResponse(result)
    return JSONResponse(result, status_code=503 if result.get("retry") else 400)


def _row(obj: Any, cols: Any) -> dict[str, Any]:
    out = {}
    for col in cols:
        value = getattr(obj, col)
        out[col] = str(value) if isinstance(value, Decimal) else (
            value.value if hasattr(value, "value") else value)  # fmt: skip
    return out
