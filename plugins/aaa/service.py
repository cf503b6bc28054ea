"""The AAA plugin: ``authenticate``, ``verify``, ``authorize``, ``audit`` and accounts.

Every outcome is written to ``audit_log`` in the same transaction as the state it
changes (a failed-login count and its audit row land together), then the refusal is
raised. Login rows are locked while they are checked, so concurrent wrong passwords
on two nodes still count one by one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.contracts import AAAContract
from corec_tasks.errors import ConfigurationError
from corec_tasks.plugin_base import ConfigLoader
from plugins.aaa import tokens, writes
from plugins.aaa.accounts import Accounts, UserInfo
from plugins.aaa.config import AAAConfig, config_from_settings, load_config
from plugins.aaa.errors import (
    AAAError,
    AccountDisabledError,
    AccountLockedError,
    AuthenticationError,
    AuthorizationError,
    TokenError,
    TokenExpiredError,
    TokenRevokedError,
)
from plugins.aaa.limits import ClientLimiter, HashSlots
from plugins.aaa.passwords import Passwords
from plugins.aaa.policy import ACTIONS, ActionKind, decide
from plugins.aaa.tokens import Claims
from plugins.trading.db import make_trading_engine, prepare, session_factory
from plugins.trading.models import AuditLog, Role, User, UserSession
from plugins.trading.types import utcnow

#: The one answer to every refused login: unknown user, wrong password, locked account.
_BAD_LOGIN = "invalid username or password"
#: A lock with ``lockout_s = 0`` lasts until an admin lifts it.
_FOREVER = timedelta(days=365 * 1000)

__all__ = ["AAAPlugin", "UserInfo"]


class AAAPlugin(Accounts, AAAContract):
    """Authentication, authorization and audit (seed 003 §1) over the trading models;
    account management comes from ``Accounts`` (plugins/aaa/accounts.py).

    The AAA plugin type's built-in, ``aaa``: loadable by type like every plugin
    (``load_plugin("aaa", "aaa", settings=...)``). Built with ``settings`` and no
    ``config``, it reads the ``aaa`` entry of corec_config.json; without ``sessions``,
    it opens its own engine on the settings' database (closed by ``close``).
    """

    plugin_name = "aaa"
    Params: ClassVar[type[BaseModel] | None] = AAAConfig
    plugin_params: ClassVar[dict[str, Any]] = AAAConfig().model_dump()
    plugin_debug_vars: ClassVar[list[str]] = ["session_timeout", "max_login_attempts", "lockout_s"]
    #: The validated options (the seed's plugins keep a dict; this one keeps its model).
    config: AAAConfig  # type: ignore[assignment]

    def __init__(
        self,
        config: Mapping[str, Any] | AAAConfig | None = None,
        *,
        sessions: sessionmaker[Session] | None = None,
        secret: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        loader: ConfigLoader | None = None,
        portfolio_id: int | None = None,
        asset_id: int | None = None,
        settings: Any = None,
    ) -> None:
        if config is None and settings is not None:
            config = config_from_settings(settings)
        checked = load_config(config)  # errors name plugins.aaa.<key>
        super().__init__(checked.model_dump(), loader=loader, portfolio_id=portfolio_id,
                         asset_id=asset_id, settings=settings)  # fmt: skip
        assert isinstance(self.params, AAAConfig)
        self.config = self.params
        self._engine: Engine | None = None
        if sessions is None:
            if settings is None:
                raise ConfigurationError([("plugins.aaa", "needs sessions or settings")])
            self._engine = _engine(settings.database_url)
            sessions = session_factory(self._engine)
        self._sessions = sessions
        # The secret is checked on first use: managing accounts does not need it.
        self._secret = secret
        self._clock = clock
        self._passwords = Passwords(self.config)
        self._slots = HashSlots(self.config)
        #: Per-client login counters (Redis); None counts nothing (the CLI, tests).
        self.limiter: ClientLimiter | None = None
        self._actions: dict[str, ActionKind] = dict(ACTIONS)

    @classmethod
    def from_url(
        cls, database_url: str, config: Mapping[str, Any] | AAAConfig | None = None, **kwargs: Any
    ) -> AAAPlugin:
        """A plugin on its own engine (schema created on SQLite, checked on PostgreSQL)."""
        engine = _engine(database_url)
        plugin = cls(config, sessions=session_factory(engine), **kwargs)
        plugin._engine = engine
        return plugin

    def close(self) -> None:
        """Dispose of the engine ``from_url`` made."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def warm_up(self) -> None:
        """Make the dummy hash now, so the first unknown-user login costs what others do."""
        self._passwords.burn("")

    def debug_info(self) -> dict[str, Any]:
        """The seed's debug view: the values of ``plugin_debug_vars``."""
        return {name: getattr(self.config, name) for name in self.plugin_debug_vars}

    def register_action(self, action: str, kind: ActionKind) -> None:
        """Let a plugin declare an action of its own (reads, capital or admin)."""
        known = self._actions.get(action)
        if known is not None and known is not kind:
            raise ConfigurationError([(action, f"already registered as {known.value}")], "actions")
        self._actions[action] = kind

    # -- authentication ------------------------------------------------------------------

    def authenticate(self, username: str, password: str, *, client: str | None = None) -> str:
        """A signed token for ``username``, or AuthenticationError (locked, disabled, wrong).

        Unknown users, wrong passwords and locked accounts get the same sentence after
        the same work (one argon2 verification each), so an answer tells nothing about
        which names exist or are locked. ``client`` (the caller's address) is counted
        against ``login_per_client`` when a limiter is set; it also scopes admin lockouts.
        """
        secret = self._signing_key()
        if client is not None and self.limiter is not None:
            self.limiter.hit(client)
        refusal: AAAError | None = None
        token = ""
        # A slot before a connection: waiting logins hold no database connection.
        with self._slots.slot(), self._sessions.begin() as db:
            now = self._clock()
            user = db.scalar(select(User).where(User.username == username).with_for_update())
            if user is None:
                self._passwords.burn(password)
                self._audit(db, None, "login.failure", username=username, reason="unknown user",
                            client=client)  # fmt: skip
                refusal = AuthenticationError(_BAD_LOGIN)
            else:
                refusal, token = self._login(db, user, password, now, secret, client)
        if refusal is not None:
            raise refusal
        return token

    def _pair(self, user: User, client: str | None) -> str | None:
        """The client whose failures lock this admin for that client alone, if any."""
        if client is None or self.limiter is None or Role(user.role) is not Role.ADMIN:
            return None
        return client

    def _login(
        self,
        db: Session,
        user: User,
        password: str,
        now: datetime,
        secret: bytes,
        client: str | None = None,
    ) -> tuple[AAAError | None, str]:
        matches = self._passwords.verify(user.password_hash, password)  # locked or not
        pair = self._pair(user, client)
        until = self._locked_until(user)
        locked = until is not None and now < until
        if not locked and pair is not None and self.limiter is not None:
            locked = self.limiter.pair_locked(pair, user.username)
        if locked:
            self._audit(db, user.id, "login.refused", username=user.username, reason="locked",
                        client=client)  # fmt: skip
            return AccountLockedError(_BAD_LOGIN), ""
        if until is not None:
            user.failed_logins, user.locked_at = 0, None
            self._audit(
                db, user.id, "account.unlocked", username=user.username, reason="lockout expired"
            )
        if not matches:
            return self._failed(db, user, now, pair, client), ""
        # Checked after the password, so a guesser cannot tell disabled accounts apart.
        if not user.is_active:
            self._audit(db, user.id, "login.refused", username=user.username, reason="disabled")
            return AccountDisabledError(
                f"account {user.username!r} is disabled; an admin can re-enable it with "
                f"`corec users enable {user.username}`"
            ), ""
        user.failed_logins = 0
        if pair is not None and self.limiter is not None:
            self.limiter.pair_clear(pair, user.username)
        if self._passwords.needs_rehash(user.password_hash):
            writes.set_password_hash(db, user, self._passwords.hash(password))
        issued = now.replace(microsecond=0)
        claims = Claims(
            user_id=user.id,
            username=user.username,
            role=Role(user.role),
            session_id=uuid.uuid4().hex,
            issued_at=issued,
            expires_at=issued + timedelta(seconds=self.config.session_timeout),
        )
        db.add(
            UserSession(
                user_id=user.id,
                token=claims.session_id,
                created_at=issued,
                expires_at=claims.expires_at,
            )
        )
        self._audit(
            db,
            user.id,
            "login.success",
            username=user.username,
            session=claims.session_id,
            expires_at=_iso(claims.expires_at),
        )
        return None, tokens.issue(secret, claims, issuer=self.config.issuer)

    def _failed(
        self, db: Session, user: User, now: datetime, pair: str | None, client: str | None
    ) -> AAAError:
        """Count a wrong password; lock the account (an admin: for ``pair`` only)."""
        user.failed_logins += 1
        self._audit(db, user.id, "login.failure", username=user.username,
                    reason="wrong password", failed_logins=user.failed_logins,
                    client=client)  # fmt: skip
        if pair is not None and self.limiter is not None:
            if self.limiter.pair_failed(pair, user.username) < self.config.max_login_attempts:
                return AuthenticationError(_BAD_LOGIN)
            self._audit(db, user.id, "account.locked", username=user.username, client=pair,
                        scope="client", failed_logins=user.failed_logins)  # fmt: skip
            return AccountLockedError(_BAD_LOGIN)
        if user.failed_logins < self.config.max_login_attempts:
            return AuthenticationError(_BAD_LOGIN)
        user.locked_at = now
        until = self._locked_until(user)
        assert until is not None
        self._audit(db, user.id, "account.locked", username=user.username,
                    failed_logins=user.failed_logins, until=_iso(until))  # fmt: skip
        return AccountLockedError(_BAD_LOGIN)

    def verify(self, token: str) -> Claims:
        """The claims of a live token, with the user's current role; TokenError otherwise."""
        secret = self._signing_key()
        now = self._clock()
        try:
            claims = tokens.decode(secret, token, now=now, issuer=self.config.issuer)
        except TokenError as exc:
            self.audit(None, "token.refused", {"reason": str(exc)})
            raise
        refusal: TokenError | None = None
        with self._sessions.begin() as db:
            row = db.scalar(select(UserSession).where(UserSession.token == claims.session_id))
            user = db.get(User, claims.user_id)
            if row is None or user is None or row.user_id != user.id:
                refusal = TokenRevokedError("token's session is unknown (revoked or never issued)")
            elif row.revoked_at is not None:
                refusal = TokenRevokedError(f"token was revoked at {_iso(row.revoked_at)}")
            elif now >= row.expires_at:
                refusal = TokenExpiredError(f"session expired at {_iso(row.expires_at)}")
            elif not user.is_active:
                refusal = TokenRevokedError(f"account {user.username!r} is disabled")
            if refusal is not None:
                self._audit(
                    db,
                    user.id if user else None,
                    "token.refused",
                    reason=str(refusal),
                    session=claims.session_id,
                )
            else:
                assert user is not None
                claims = replace(claims, role=Role(user.role))
        if refusal is not None:
            raise refusal
        return claims

    def logout(self, token: str) -> None:
        """End the token's session: it is refused from now on."""
        claims = self.verify(token)
        with self._sessions.begin() as db:
            db.execute(
                update(UserSession)
                .where(UserSession.token == claims.session_id)
                .values(revoked_at=self._clock())
            )
            self._audit(db, claims.user_id, "logout", session=claims.session_id)

    # -- authorization and audit ---------------------------------------------------------

    def authorize(
        self, token_or_claims: str | Claims, action: str, *, user_id: int | None = None
    ) -> bool:
        """True if allowed (audited either way); AuthorizationError with the reason if not.

        ``user_id`` is whose data or capital the action touches; capital actions need it.
        Claims are trusted as given: pass only what ``verify`` returned.
        """
        if isinstance(token_or_claims, Claims):
            claims = token_or_claims
        else:
            claims = self.verify(token_or_claims)
        decision = decide(claims.role, claims.user_id, action, user_id, self._actions)
        self.audit(
            claims.user_id,
            "authorize.allow" if decision.allowed else "authorize.deny",
            {
                "action": action,
                "target_user_id": user_id,
                "role": claims.role.value,
                "reason": decision.reason,
            },
        )
        if not decision.allowed:
            raise AuthorizationError(
                f"user {claims.username!r} ({claims.role.value}) may not {action!r}: "
                f"{decision.reason}"
            )
        return True

    def audit(
        self, user_id: int | None, action: str, details: Mapping[str, Any] | str | None = None
    ) -> int:
        """Append one row to the audit log; its id."""
        with self._sessions.begin() as db:
            row = self._audit(db, user_id, action, _details=details)
            db.flush()
            return row.id

    #: The seed's name for ``audit``.
    audit_log = audit

    def _audit(
        self,
        db: Session,
        user_id: int | None,
        action: str,
        _details: Mapping[str, Any] | str | None = None,
        **fields: Any,
    ) -> AuditLog:
        details: str | None
        if isinstance(_details, str):
            details = _details
        else:
            merged = {**(_details or {}), **fields}
            details = json.dumps(merged, sort_keys=True, default=str) if merged else None
        row = AuditLog(user_id=user_id, action=action, timestamp=self._clock(), details=details)
        db.add(row)
        return row

    # -- helpers -------------------------------------------------------------------------

    def _signing_key(self) -> bytes:
        if self._secret is not None:
            return tokens.secret_from_env({tokens.SECRET_ENV: self._secret})
        return tokens.secret_from_env()

    def _locked_until(self, user: User) -> datetime | None:
        if user.locked_at is None:
            return None
        hold = timedelta(seconds=self.config.lockout_s) if self.config.lockout_s else _FOREVER
        return user.locked_at + hold


def _engine(database_url: str) -> Engine:
    engine = make_trading_engine(database_url)
    try:
        prepare(engine)
    except Exception:
        engine.dispose()
        raise
    return engine


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")
