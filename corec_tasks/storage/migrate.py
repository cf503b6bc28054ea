"""Run the schema migrations from code (no alembic.ini): ``upgrade`` and ``current``.

The framework's revisions are one chain (``0001``, ``app_role``); each plugin's tables
are an Alembic branch in its own folder (plugin.json ``migrations``), rooted on ``0001``.
A database upgraded when the plugins' tables still sat in the framework's chain is
restamped once, under the upgrade's lock (``repair_legacy``).

Migrations run as the tables' owner (``COREC_MIGRATE_DATABASE_URL``, default
``DATABASE_URL``). When the application connects as another role (``DATABASE_URL``),
``upgrade`` grants that role what the running system needs and nothing more: CONNECT,
USAGE on the schema, SELECT/INSERT/UPDATE/DELETE on the tables, USAGE on sequences,
EXECUTE on the partition function; the same as default privileges, so tables a later
revision (or a plugin's branch) creates are covered too. Not being the owner nor a
superuser, that role can neither disable the append-only triggers nor set
``session_replication_role``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from alembic import command, util
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, quoted_name, text
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from corec_tasks.db import make_engine, redact
from corec_tasks.discovery import available, enabled
from corec_tasks.errors import ConfigurationError, StorageError
from corec_tasks.manifest import read_manifest
from corec_tasks.settings import load_settings
from corec_tasks.storage.partitions import PARTITION_FUNCTION

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: pg_advisory_lock key held for a whole upgrade, so nodes starting together take turns.
LOCK_KEY = 0x636F7265_634D0001


def plugin_version_dirs(every: bool = False) -> list[Path]:
    """The Alembic version folders of the enabled plugins (``migrations`` in their
    plugin.json): each an Alembic branch whose first revision depends on the framework's.
    With ``every``, those of every plugin that can be found, enabled or not. None when
    the config cannot be read (``corec config check`` says why)."""
    try:
        settings = load_settings()
        dirs = [p.folder / p.manifest.migrations for p in enabled(settings)
                if p.manifest.migrations]  # fmt: skip
        if every:
            for folder in available(settings).values():
                try:
                    manifest = read_manifest(folder)
                except (ConfigurationError, OSError, ValueError):
                    continue  # a broken manifest: `corec config check` names it
                if manifest.migrations and folder / manifest.migrations not in dirs:
                    dirs.append(folder / manifest.migrations)
    except ConfigurationError:
        return []
    return dirs


def alembic_config() -> Config:
    """An Alembic Config on the packaged migrations and every known plugin's branch.

    Every plugin's branch, not only the enabled ones: a database upgraded while a
    plugin was enabled holds that branch's revision, and Alembic must be able to locate
    it after the plugin is disabled. Which branches are upgraded is ``targets()``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    dirs = [MIGRATIONS_DIR / "versions", *plugin_version_dirs(every=True)]
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(str(d) for d in dirs))
    return cfg


def targets(cfg: Config | None = None) -> list[str]:
    """The heads to upgrade to: the framework's and each enabled plugin's branch."""
    script = ScriptDirectory.from_config(cfg or alembic_config())
    wanted = [(MIGRATIONS_DIR / "versions").resolve(),
              *(d.resolve() for d in plugin_version_dirs())]  # fmt: skip
    out = []
    for rev in script.get_heads():
        path = Path(script.get_revision(rev).path).resolve()
        if any(path.is_relative_to(d) for d in wanted):
            out.append(rev)
    return sorted(out)


def head() -> str:
    """What ``current`` shows once upgraded: the newest revision of each branch (the
    framework's, each enabled plugin's), less those another one depends on (Alembic
    keeps only the dependent's row)."""
    cfg = alembic_config()
    heads = targets(cfg)
    if not heads:  # only if the package was shipped without its versions/
        raise StorageError(f"no migrations found under {MIGRATIONS_DIR}")
    return ", ".join(tips(ScriptDirectory.from_config(cfg), heads))


def below(script: ScriptDirectory, revisions: Iterable[str]) -> set[str]:
    """``revisions`` and every revision under them, through ``down_revision`` and
    ``depends_on`` alike: what is applied when ``alembic_version`` holds them."""
    out: set[str] = set()
    todo = list(revisions)
    while todo:
        rev = script.get_revision(todo.pop())
        if rev is None or rev.revision in out:
            continue
        out.add(rev.revision)
        todo += [*util.to_tuple(rev.down_revision, ()), *util.to_tuple(rev.dependencies, ())]
    return out


def _known(script: ScriptDirectory, rev: str) -> bool:
    try:
        return script.get_revision(rev) is not None
    except CommandError:
        return False


def tips(script: ScriptDirectory, revisions: Iterable[str]) -> list[str]:
    """Of ``revisions``, those no other one stands on: the rows ``alembic_version``
    holds for them."""
    revs = set(revisions)
    under = set().union(*(below(script, [r]) - {r} for r in revs))
    return sorted(revs - under)


#: The framework's own history: the one linear chain every revision sat in before the
#: plugins' tables moved to their plugins' branches (capital_pool: 0002, 0004,
#: 0006_settlement; aaa: 0003, and 0004's audit_log trigger, now 0004_audit), and what
#: each old revision is now. A database upgraded by that code holds one row of this
#: chain; ``repair_legacy`` restamps it. Frozen: new revisions never go here.
LEGACY_CHAIN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("0001", ("0001",)),
    ("0002", ("0002",)),
    ("0003", ("0003",)),
    ("0004", ("0004", "0004_audit")),
    ("0005_app_role", ("app_role",)),
    ("0006_settlement", ("0006_settlement",)),
)


def legacy_equivalent(
    script: ScriptDirectory, rows: Iterable[str], partition_function: bool = True
) -> list[str] | None:
    """The ``alembic_version`` rows that say, in today's graph, what ``rows`` said in the
    old linear chain; None when ``rows`` hold no old-chain revision, or already mean it.

    Everything at or below the old row, in the old order, maps to its new revision;
    other rows (a plugin branch that was a branch already) are kept. ``app_role`` counts
    only with its ``partition_function`` present: a lone ``0006_settlement`` row is also
    what today's graph leaves after ``corec db upgrade 0006_settlement``, without it.
    """
    order = [old for old, _ in LEGACY_CHAIN]
    rows = set(rows)
    old = [r for r in rows if r in order]
    if len(old) != 1:  # the old chain had one head; two rows of it are today's graph
        return None
    applied = rows - set(old)
    for _, now in LEGACY_CHAIN[: order.index(old[0]) + 1]:
        applied.update(r for r in now if partition_function or r != "app_role")
    missing = [r for r in applied if not _known(script, r)]
    if missing:
        raise StorageError(f"cannot repair alembic_version {sorted(rows)}: revisions "
                           f"{sorted(missing)} not found (is their plugin installed?)")
    new = tips(script, applied)
    return None if set(new) == rows else new


def repair_legacy(conn: Connection, script: ScriptDirectory) -> list[str] | None:
    """Restamp a database upgraded by the old linear chain to the same schema in
    today's branches, in one transaction; returns the new rows (None: nothing to do).

    Why: its plugin tables exist, but ``alembic_version`` names only the old chain's
    head, so Alembic would run the plugins' branches again (CREATE TABLE on tables that
    exist). No DDL runs here; the schema is already the one the new rows describe.
    """
    # Committed (or rolled back) here: Alembic would take an open transaction for its
    # caller's and commit none of the revisions.
    with conn.begin():
        if conn.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
            return None
        rows = [str(r) for r in conn.execute(text("SELECT version_num FROM alembic_version"))
                .scalars()]  # fmt: skip
        sig = f"{PARTITION_FUNCTION}(text, integer, integer)"
        function = conn.execute(text("SELECT to_regprocedure(:s)"), {"s": sig}).scalar()
        new = legacy_equivalent(script, rows, partition_function=function is not None)
        if new is not None:
            conn.execute(text("DELETE FROM alembic_version"))
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"),
                         [{"v": v} for v in new])  # fmt: skip
        return new


def upgrade(database_url: str, revision: str = "heads", app_url: str | None = None) -> list[str]:
    """Migrate the database to ``revision`` as ``database_url``'s role (the owner); then
    grant ``app_url``'s role its privileges when it is another role. Concurrent callers
    wait for each other. Returns warnings about the application role (empty when fine).
    """
    app = _role_of(app_url) if app_url and app_url != database_url else None
    engine = _engine(database_url)
    try:
        with _connect(engine, database_url) as conn:
            # Session-level, so each revision can still commit on its own; NullPool
            # closes the session on exit, which releases the lock even after a failure.
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            conn.commit()
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            repair_legacy(conn, ScriptDirectory.from_config(cfg))
            # "heads": the framework's and the enabled plugins' branches, not a disabled
            # plugin's (its scripts are known only so its applied revision is found).
            for target in targets(cfg) if revision == "heads" else [revision]:
                command.upgrade(cfg, target)
                # A branch already at its head runs no revision but leaves the read of
                # alembic_version open; the next branch's revisions would run inside that
                # transaction (Alembic then commits none of them) and be rolled back.
                conn.commit()
            me = _whoami(conn)
            if app is not None and app[0] != me[0]:
                grant_app_role(conn, app[0])
                conn.commit()
            return _warnings(conn, app or me)
    except CommandError as exc:
        raise StorageError(f"cannot upgrade to {revision!r}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"migration to {revision!r} failed: {exc}") from exc
    finally:
        engine.dispose()


def grant_app_role(conn: Connection, role: str) -> None:
    """Grant ``role`` what the application needs on this database (idempotent).

    Run as the owner: ALTER DEFAULT PRIVILEGES applies to objects the current role
    creates later, which is what migrations and the partition function do.
    """
    q = conn.dialect.identifier_preparer.quote
    r = q(quoted_name(role, quote=True))
    db = q(quoted_name(str(conn.execute(text("SELECT current_database()")).scalar_one()), True))
    schema = q(quoted_name(str(conn.execute(text("SELECT current_schema()")).scalar_one()), True))
    dml = "SELECT, INSERT, UPDATE, DELETE"
    for stmt in (
        f"GRANT CONNECT ON DATABASE {db} TO {r}",
        f"GRANT USAGE ON SCHEMA {schema} TO {r}",
        f"GRANT {dml} ON ALL TABLES IN SCHEMA {schema} TO {r}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {dml} ON TABLES TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE ON SEQUENCES TO {r}",
    ):
        conn.execute(text(stmt))
    sig = f"{PARTITION_FUNCTION}(text, integer, integer)"
    if conn.execute(text("SELECT to_regprocedure(:s)"), {"s": sig}).scalar() is not None:
        conn.execute(text(f"GRANT EXECUTE ON FUNCTION {schema}.{sig} TO {r}"))


def _whoami(conn: Connection) -> tuple[str, bool]:
    row = conn.execute(
        text("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    ).one()
    return str(row[0]), bool(row[1])


def _role_of(url: str) -> tuple[str, bool]:
    """The role ``url`` logs in as, and whether it is a superuser."""
    engine = _engine(url)
    try:
        with _connect(engine, url) as conn:
            return _whoami(conn)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the application role: {exc}") from exc
    finally:
        engine.dispose()


def _warnings(conn: Connection, app: tuple[str, bool]) -> list[str]:
    """Why the application role ``app`` could still get around the append-only triggers."""
    owner_of_tables = "SELECT pg_get_userbyid(relowner) FROM pg_class " \
        "WHERE oid = to_regclass('alembic_version')"  # fmt: skip
    owner = conn.execute(text(owner_of_tables)).scalar()
    out = []
    if app[0] == owner:
        out.append(f"the application connects as {owner}, the tables' owner: it could "
                   "disable the append-only triggers; set DATABASE_URL to a separate role "
                   "and COREC_MIGRATE_DATABASE_URL to the owner (README: Database roles)")
    elif owner and conn.execute(
        text("SELECT pg_has_role(:a, :o, 'MEMBER')"), {"a": app[0], "o": owner}
    ).scalar():
        out.append(f"the application role {app[0]} is a member of the owner {owner}")
    if app[1]:
        out.append(f"the application role {app[0]} is a superuser: it could bypass the "
                   "append-only triggers (session_replication_role)")  # fmt: skip
    return out


def current(database_url: str) -> str | None:
    """The revision the database is at (one per branch, comma-separated), or None if
    it was never migrated."""
    engine = _engine(database_url)
    try:
        with _connect(engine, database_url) as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
            return ", ".join(sorted(heads)) if heads else None
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the schema revision: {exc}") from exc
    finally:
        engine.dispose()


def up_to_date(database_url: str) -> bool:
    """Whether the database holds every revision ``head()`` names (it may hold more: a
    branch another config enabled, or one that depends on a head here)."""
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    now = current(database_url)
    have = below(script, now.split(", ")) if now else set()
    return below(script, targets(cfg)) <= have


def _engine(database_url: str) -> Engine:
    try:
        return make_engine(database_url, poolclass=NullPool)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(f"invalid database URL {redact(database_url)}: {exc}") from exc


def _connect(engine: Engine, database_url: str) -> Connection:
    try:
        return engine.connect()
    except OperationalError as exc:
        raise StorageError(
            f"cannot connect to PostgreSQL at {redact(database_url)}: {exc.orig}"
        ) from exc
