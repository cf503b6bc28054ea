"""The core plugin's HTTP API (FastAPI): login, capital, portfolios, orders, positions,
health and Prometheus metrics. ``corec api`` serves it with uvicorn; ``/docs`` and
``/openapi.json`` describe it, every status each route answers included.

Every route but ``/login``, ``/health`` and ``/metrics`` needs ``Authorization: Bearer
<token>`` from ``/login``; the AAA plugin verifies it and authorises the action (a
member moves only their own capital), and audits both. Capital actions go to the
``capital_pool`` Celery tasks by default (``CeleryCapital``), so the API server holds
no ledger connection; each task carries a single-use *grant* for exactly that action,
never the login token. ``DirectCapital`` calls the same service in-process (one node).
Either way the ledger writes its own ``audit_log`` row (``capital.contribute``, principal
``user:<username>``) besides the API's ``capital.<action>.result`` row.
Capital members are named by their AAA username.

The API stays up for everyone: no database connection is held across a capital call
(each read opens and closes its own short session), the wait for a worker is bounded
(``COREC_API_TASK_TIMEOUT_S``, 5 s) and then answered 503 with ``"retry": true``, and
logins are bounded per client and in concurrent password hashes (``plugins.aaa.limits``).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run
# time, and the dependency aliases (Who, Raw) are local to create_app.
import os
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from corec_tasks.errors import CorecError
from corec_tasks.settings import IPNetwork
from corec_tasks.strict import (
    USER_ID_MAX,
    USER_ID_PATTERN,
    Key,
    MoneyText,
    UserId,
    reason_of,
    shown,
)
from plugins.aaa.errors import AAAError, AuthenticationError, AuthorizationError, TokenError
from plugins.aaa.limits import BusyError, ClientLimiter, TooManyAttemptsError
from plugins.aaa.service import AAAPlugin
from plugins.aaa.tokens import Claims
from plugins.core.body import StrictJSONRoute
from plugins.core.clients import client_address, may_read_metrics
from plugins.trading.models import Order, Portfolio, Position, Role, User

TASK_TIMEOUT_ENV = "COREC_API_TASK_TIMEOUT_S"
DEFAULT_TASK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Caller:
    """Who asked for a capital action: the verified claims of their bearer token (the
    token itself stays in the API: no capital path needs it)."""

    claims: Claims

    @property
    def principal(self) -> str:
        """The ledger's audit name for this caller."""
        return f"user:{self.claims.username}"


class Capital(Protocol):
    """What the API needs of the capital pool (JSON results, ``ok`` true or false;
    ``retry`` true when the same call may succeed later)."""

    def contribute(
        self, user_id: str, amount: str, key: str, caller: Caller | None = None
    ) -> dict[str, Any]: ...
    def withdraw(
        self, user_id: str, amount: str, key: str, caller: Caller | None = None
    ) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def member(self, user_id: str) -> dict[str, Any]: ...


def task_timeout(environ: dict[str, str] | None = None) -> float:
    """Seconds the API waits for a capital task: ``COREC_API_TASK_TIMEOUT_S``, else 5."""
    raw = (os.environ if environ is None else environ).get(TASK_TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TASK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 300:
        from corec_tasks.errors import ConfigurationError

        raise ConfigurationError([(TASK_TIMEOUT_ENV, f"{raw!r} must be seconds in [0.1, 300]")],
                                 "environment")  # fmt: skip
    return value


def grant_kwargs(
    caller: Caller, action: str, member: str, amount: str, key: str, grant_key: bytes
) -> dict[str, str]:
    """The kwargs that authorise one capital task without the login token: a grant for
    exactly this action, amount, member and idempotency key, single-use, 60 s."""
    from plugins.capital_pool import grants

    return {"grant": grants.mint(member, f"capital.{action}", amount, key,
                                 user_id=caller.claims.user_id,
                                 username=caller.claims.username, key=grant_key)}  # fmt: skip


class CeleryCapital:
    """The capital_pool Celery tasks, waited for at most ``timeout`` s (then ``retry``).

    Results are read by polling the backend (thread-safe, unlike one shared pub/sub
    consumer) and deleted once read, so the task's arguments do not rest in Redis.
    """

    def __init__(self, timeout: float | None = None, grant_key: bytes | None = None) -> None:
        from corec_tasks.celery import app

        self.app = app
        self.timeout = task_timeout() if timeout is None else timeout
        self._grant_key = grant_key

    def _call(self, task: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from celery import states

        from plugins.capital_pool import grants

        try:
            pending = self.app.send_task(
                task, args=list(args), kwargs=kwargs, kwargsrepr=grants.kwargs_repr(kwargs),
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                              "interval_max": 1},
            )  # fmt: skip
        except Exception as exc:  # kombu/redis errors: the broker is unreachable
            return {"ok": False, "retry": True,
                    "error": f"the task broker is unreachable ({type(exc).__name__}); retry "
                             "with the same idempotency_key"}  # fmt: skip
        deadline = time.monotonic() + self.timeout
        pause = 0.01
        while True:
            try:
                meta = self.app.backend.get_task_meta(pending.id, cache=False)
            except Exception as exc:  # the result backend is unreachable
                meta = {"status": states.PENDING, "error": exc}
            if meta["status"] in states.READY_STATES:
                break
            if time.monotonic() >= deadline:
                why = (f"no capital worker answered within {self.timeout:g} s; retry with the "
                       "same idempotency_key (it applies at most once)")
                return {"ok": False, "retry": True, "error": why}
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        with suppress(Exception):  # else the result expires by itself (result_expires)
            self.app.backend.forget(pending.id)
        if meta["status"] != states.SUCCESS:
            raise CapitalTaskFailed(f"the capital task {task} failed: {meta.get('result')!r}")
        result: dict[str, Any] = meta["result"]
        return result

    def _auth(
        self, action: str, user_id: str, amount: str, key: str, caller: Caller | None
    ) -> dict[str, str]:
        """A grant for the caller (none without one: the task then refuses, audited)."""
        if caller is None:
            return {}
        if self._grant_key is None:
            from plugins.capital_pool.grants import load_key

            self._grant_key = load_key()
        return grant_kwargs(caller, action, user_id, amount, key, self._grant_key)

    def contribute(
        self, user_id: str, amount: str, key: str, caller: Caller | None = None
    ) -> dict[str, Any]:
        """Sent with a grant for exactly this contribution, never the login token."""
        auth = self._auth("contribute", user_id, amount, key, caller)
        return self._call("capital_pool.contribute", user_id, amount, key, **auth)

    def withdraw(
        self, user_id: str, amount: str, key: str, caller: Caller | None = None
    ) -> dict[str, Any]:
        auth = self._auth("withdraw", user_id, amount, key, caller)
        return self._call("capital_pool.withdraw", user_id, amount, key, **auth)

    def status(self) -> dict[str, Any]:
        return self._call("capital_pool.status")

    def member(self, user_id: str) -> dict[str, Any]:
        return self._call("capital_pool.member", user_id)


class CapitalTaskFailed(CorecError):
    """A capital task raised instead of answering (a bug, not a refusal): HTTP 500."""


class DirectCapital:
    """The same service the tasks call, in this process (``pool``, or one built from
    the process's settings); the caller is the principal the ledger audits, and an
    action without one is refused (and audited)."""

    def __init__(self, pool: Any = None) -> None:
        if pool is None:
            from corec_tasks.runtime import get_settings
            from plugins.capital_pool.service import CapitalPool
            from plugins.capital_pool.settings import capital_config

            settings = get_settings()
            pool = CapitalPool(settings, capital_config(settings))
        self.pool = pool

    def contribute(
        self, user_id: str, amount: str, key: str, caller: Caller | None = None
    ) -> dict[str, Any]:
        return self._move("contribute", user_id, amount, key, caller)

    def withdraw(
        self, user_id: str, amount: str, key: str, caller: Caller | None = None
    ) -> dict[str, Any]:
        return self._move("withdraw", user_id, amount, key, caller)

    def _move(
        self, kind: str, user_id: str, amount: str, key: str, caller: Caller | None
    ) -> dict[str, Any]:
        if caller is None:
            refused: dict[str, Any] = self.pool.refuse(
                kind, user_id, amount, key, principal="api:no-caller",
                reason=f"capital.{kind} needs a logged-in caller")  # fmt: skip
            return refused
        result: dict[str, Any] = getattr(self.pool, kind)(user_id, amount, key,
                                                          principal=caller.principal)  # fmt: skip
        return result

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.pool.status()
        return result

    def member(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.pool.member(user_id)
        return result


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class PasswordIn(BaseModel):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class ErrorOut(BaseModel):
    """Every refusal: ``ok`` false, one sentence, and ``retry`` when it may pass later."""

    ok: bool = False
    error: str
    retry: bool | None = None


class CapitalIn(BaseModel):
    """A contribution or withdrawal: strict (``corec_tasks.strict``), nothing unknown."""

    model_config = ConfigDict(extra="forbid")

    amount: MoneyText = Field(
        description='Dollars as a decimal string of ASCII digits, at most 2 decimals, e.g. '
        '"500.00" (no spaces, exponent, "_" or other digit scripts)'
    )
    idempotency_key: Key
    user: UserId | None = Field(None, description="Member (username); default: yourself")


_WHY = {
    400: "refused by the rules (the sentence says why)",
    401: "no, expired, revoked or invalid bearer token; or login refused",
    403: "the caller's role may not do this",
    404: "no such user",
    429: "too many login attempts from this client (see Retry-After)",
    500: "a capital task failed unexpectedly",
    503: "a dependency is unavailable or busy; retry (same idempotency_key)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut, "description": _WHY[code]} for code in codes}


#: The statuses each kind of route answers besides 200 and FastAPI's own 422.
AUTHED = (401, 403)
CAPITAL_MOVE = _errors(400, *AUTHED, 404, 500, 503)
#: FastAPI's answer to a body it cannot decode (found by schemathesis).
_UNPARSED = (400, "There was an error parsing the body")
#: Who is refused the API's /metrics.
_METRICS_403 = "the client is neither loopback nor in COREC_API_METRICS_FROM"
#: Routes not counted in /metrics: their statuses would count failed logins.
_UNMETERED = {"/login", "/logout", "/password"}


def create_app(
    aaa: AAAPlugin,
    capital: Capital,
    *,
    health_checks: dict[str, Callable[[], Any]] | None = None,
    limiter: ClientLimiter | None = None,
    trusted_proxies: Sequence[IPNetwork] | None = None,
    metrics_from: Sequence[IPNetwork] | None = None,
) -> FastAPI:
    """The API on ``aaa`` (its database holds users, portfolios, orders, positions).

    Logins are counted per client by ``limiter``, else by the AAA plugin's own, else by
    one on the environment's Redis (``REDIS_URL``, ``COREC_REDIS_PREFIX``). The client
    is the TCP peer, or what ``X-Forwarded-For`` says when the peer is one of
    ``trusted_proxies`` (default: ``COREC_TRUSTED_PROXIES``, empty; ``plugins.core.clients``).
    ``/metrics`` answers that client only if it is loopback or in ``metrics_from``
    (default: ``COREC_API_METRICS_FROM``, empty).
    """
    if trusted_proxies is None or metrics_from is None:
        from corec_tasks.settings import load_env

        env = load_env()
        trusted_proxies = env.proxies if trusted_proxies is None else trusted_proxies
        metrics_from = env.metrics_readers if metrics_from is None else metrics_from
    proxies, readers = tuple(trusted_proxies), tuple(metrics_from)
    if limiter is not None:
        aaa.limiter = limiter
    elif aaa.limiter is None:
        from corec_tasks.redis_conn import redis_client
        from corec_tasks.settings import load_settings

        settings = load_settings()
        aaa.limiter = ClientLimiter(redis_client(settings), settings.redis_prefix, aaa.config)
    aaa.warm_up()
    app = FastAPI(
        title="CoreC API",
        version="1.0",
        description="Capital pool, portfolios, orders and positions of CoreC.",
    )
    # Every route reads its JSON body strictly: a duplicate key is a 422, never "last wins".
    app.router.route_class = StrictJSONRoute
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
        if path not in _UNMETERED:
            latency.labels(path).observe(time.perf_counter() - t0)
            requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.exception_handler(AAAError)
    async def _aaa_error(_: Request, exc: AAAError) -> JSONResponse:
        headers: dict[str, str] = {}
        body: dict[str, Any] = {"ok": False, "error": str(exc)}
        if isinstance(exc, AuthorizationError):
            code = 403
        elif isinstance(exc, TooManyAttemptsError):
            code, headers["Retry-After"] = 429, str(exc.retry_after)
        elif isinstance(exc, BusyError):
            code, body["retry"] = 503, True
        elif isinstance(exc, TokenError | AuthenticationError):
            code = 401
        else:
            code = 400
        return JSONResponse(body, status_code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One sentence, the input cut short: never FastAPI's echo of the whole body.
        return JSONResponse({"ok": False, "error": reason_of(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own are Starlette's
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # A body FastAPI cannot decode (not UTF-8) is invalid input like any other: 422.
        code = 422 if (exc.status_code, exc.detail) == _UNPARSED else exc.status_code
        return JSONResponse({"ok": False, "error": exc.detail}, status_code=code,
                            headers=exc.headers)  # fmt: skip

    @app.exception_handler(CapitalTaskFailed)
    async def _task_failed(_: Request, exc: CapitalTaskFailed) -> JSONResponse:
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=500)

    def _bearer(creds: HTTPAuthorizationCredentials | None) -> str:
        if creds is None:
            raise HTTPException(401, "a bearer token is required: POST /login first",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return creds.credentials

    def caller(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        return Caller(aaa.verify(_bearer(creds)))

    def claims(who: Annotated[Caller, Depends(caller)]) -> Claims:
        return who.claims

    Who = Annotated[Claims, Depends(claims)]
    Me = Annotated[Caller, Depends(caller)]

    def client_of(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.getlist("x-forwarded-for"), proxies)

    def user_id_of(username: str) -> int:
        """One short read: no connection is held past it."""
        with sessions() as session:
            uid = session.scalar(select(User.id).where(User.username == username))
        if uid is None:
            raise HTTPException(404, f"no user {username!r}")
        return uid

    @app.post("/login", response_model=TokenOut, responses=_errors(401, 429, 503))
    def login(body: LoginIn, request: Request) -> TokenOut:
        """A bearer token for ``username``. Every refusal reads the same; a client may try
        ``login_per_client`` times per ``login_window_s`` (429 after)."""
        token = aaa.authenticate(body.username, body.password, client=client_of(request))
        return TokenOut(access_token=token, expires_in=aaa.config.session_timeout)

    @app.post("/logout", responses=_errors(401))
    def logout(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> dict[str, Any]:
        """Revoke this token's session."""
        aaa.logout(_bearer(creds))
        return {"ok": True}

    @app.post("/password", responses=_errors(400, 401, 429, 503))
    def password(body: PasswordIn, me: Me, request: Request) -> dict[str, Any]:
        """Change your password (the current one is checked); your other sessions are
        revoked, this one stays valid."""
        if aaa.limiter is not None:
            aaa.limiter.hit(client_of(request))
        revoked = aaa.change_password(
            me.claims.username, body.new_password, old_password=body.old_password,
            keep_session=me.claims.session_id, actor=me.claims,
        )  # fmt: skip
        return {"ok": True, "sessions_revoked": revoked}

    @app.get("/health", responses=_errors(503))
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

    @app.get("/metrics", responses={403: {"model": ErrorOut, "description": _METRICS_403}})
    def metrics(request: Request) -> Response:
        """Prometheus metrics of this API process: requests by route and status (the
        login, logout and password routes are not counted), latency, capital actions.
        Served to loopback clients and ``COREC_API_METRICS_FROM`` only."""
        client = client_of(request)
        if not may_read_metrics(client, readers):
            why = f"not to {shown(client)}"
            raise HTTPException(403, f"/metrics is served to loopback and "
                                     f"COREC_API_METRICS_FROM only, {why}")  # fmt: skip
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/capital/status", responses=_errors(400, *AUTHED, 500, 503))
    def capital_status(who: Who) -> JSONResponse:
        """The pool: equity, cash, active, units, NAV, phase, risk, VIX; members' shares
        for admins, only your own for others."""
        aaa.authorize(who, "pool.view")
        status = capital.status()
        if status.get("ok") and who.role is not Role.ADMIN:
            own = status.get("members", {}).get(who.username)
            status["members"] = {who.username: own} if own else {}
        return _answer(status)

    Member = Annotated[str, Path(max_length=USER_ID_MAX, pattern=USER_ID_PATTERN)]

    @app.get("/capital/members/{user}", responses=_errors(400, *AUTHED, 404, 500, 503))
    def capital_member(user: Member, who: Who) -> JSONResponse:
        """One member's units, value, contributed, withdrawn and ROI."""
        aaa.authorize(who, "capital.view", user_id=user_id_of(user))
        return _answer(capital.member(user))

    def _move(action: str, body: CapitalIn, me: Caller) -> JSONResponse:
        who = me.claims
        user = body.user or who.username
        aaa.authorize(who, f"capital.{action}", user_id=user_id_of(user))
        result = getattr(capital, action)(user, body.amount, body.idempotency_key, me)
        capital_actions.labels(action, str(bool(result.get("ok"))).lower()).inc()
        aaa.audit(who.user_id, f"capital.{action}.result",
                  {"user": user, "amount": body.amount, "key": body.idempotency_key,
                   "ok": result.get("ok"), "error": result.get("error")})  # fmt: skip
        return _answer(result)

    @app.post("/capital/contribute", responses=CAPITAL_MOVE)
    def contribute(body: CapitalIn, me: Me) -> JSONResponse:
        """Buy units for ``amount`` (idempotent per key)."""
        return _move("contribute", body, me)

    @app.post("/capital/withdraw", responses=CAPITAL_MOVE)
    def withdraw(body: CapitalIn, me: Me) -> JSONResponse:
        """Redeem units worth ``amount`` (idempotent per key)."""
        return _move("withdraw", body, me)

    def _mine(who: Claims, action: str) -> list[int] | None:
        """Portfolio ids the caller may read (None: all, for admins and viewers)."""
        aaa.authorize(who, action, user_id=who.user_id)
        if who.role is not Role.MEMBER:
            return None
        with sessions() as session:
            return list(
                session.scalars(select(Portfolio.id).where(Portfolio.user_id == who.user_id))
            )

    @app.get("/portfolios", responses=_errors(*AUTHED))
    def portfolios(who: Who) -> list[dict[str, Any]]:
        """Portfolios (a member sees their own)."""
        ids = _mine(who, "portfolio.view")
        query = select(Portfolio).order_by(Portfolio.id)
        if ids is not None:
            query = query.where(Portfolio.id.in_(ids))
        cols = ("id", "user_id", "name", "base_currency", "capital", "is_active")
        with sessions() as session:
            return [_row(p, cols) for p in session.scalars(query)]

    @app.get("/orders", responses=_errors(*AUTHED))
    def orders(who: Who, limit: int = 100) -> list[dict[str, Any]]:
        """The newest orders (a member sees their portfolios')."""
        ids = _mine(who, "order.view")
        query = select(Order).order_by(Order.id.desc()).limit(min(max(limit, 1), 1000))
        if ids is not None:
            query = query.where(Order.portfolio_id.in_(ids))
        cols = ("id", "client_order_id", "portfolio_id", "asset_id", "side", "order_type",
                "quantity", "price", "status", "filled_quantity", "average_fill_price")  # fmt: skip
        with sessions() as session:
            return [_row(o, cols) for o in session.scalars(query)]

    @app.get("/positions", responses=_errors(*AUTHED))
    def positions(who: Who) -> list[dict[str, Any]]:
        """Open positions (a member sees their portfolios')."""
        ids = _mine(who, "position.view")
        query = select(Position).order_by(Position.id)
        if ids is not None:
            query = query.where(Position.portfolio_id.in_(ids))
        cols = [c.key for c in Position.__table__.columns]
        with sessions() as session:
            return [_row(p, cols) for p in session.scalars(query)]

    _document_invalid_input(app)
    return app


#: What a 422 answers (``_bad_request``): FastAPI documents its own ``{"detail": [...]}``.
_INVALID = "invalid input: one sentence naming the field and why (the input is cut short)"


def _document_invalid_input(app: FastAPI) -> None:
    """Make the OpenAPI document say what a 422 really is: ``ErrorOut``, like every other
    refusal, instead of FastAPI's ``HTTPValidationError`` (whose ``detail`` is optional,
    so any body passed for it and schemathesis could not tell)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=app.description)  # fmt: skip
            error = {"$ref": "#/components/schemas/ErrorOut"}
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    invalid = operation.get("responses", {}).get("422")
                    if invalid is not None:
                        invalid["description"] = _INVALID
                        invalid["content"] = {"application/json": {"schema": error}}
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            components.setdefault("ErrorOut", ErrorOut.model_json_schema())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


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
