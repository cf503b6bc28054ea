"""Move stream entries into PostgreSQL ``eventos``, exactly once in effect.

Per stream, as consumer group ``corec_persister``, a handler of the one consumer loop
(``corec_tasks.streams.consumer``: connect first, reclaim, read, isolate, settle, trim):

1. connect to PostgreSQL before claiming anything (down: the round does nothing);
2. validate each payload against its stream's schema; an invalid one goes to the
   dead letter with the reason;
3. COPY the valid ones (``write_events``), COMMIT, and only then XACK; a row PostgreSQL
   rejects is found by splitting the batch and dead-lettered alone.

Why this is exactly once in effect: the row key is ``"<stream>:<entry id>"`` and its
timestamp is the entry id's milliseconds, both fixed by Redis at XADD, and the insert
is ``ON CONFLICT DO NOTHING``. A crash before the commit leaves the entries pending and
another consumer reclaims them; a crash after the commit but before the ack makes the
redelivery insert nothing. Concurrent persisters (beat tasks on several nodes, the CLI
loop) get disjoint entries from the consumer group; when a slow one's entries are
reclaimed meanwhile, both insert the same keys in the same (id) order, so the second
waits for the first and then skips them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from corec_tasks.db import libpq_url
from corec_tasks.discovery import enabled
from corec_tasks.errors import StorageError, StreamError
from corec_tasks.runtime import runtime
from corec_tasks.settings import Settings
from corec_tasks.storage.writer import EventRow, write_events
from corec_tasks.streams.bus import F_DATA, F_INSTANCE, F_TIME, Entry, StreamBus, id_key
from corec_tasks.streams.consumer import (
    Batch,
    ConsumerLoop,
    Handler,
    Result,
    RoundStats,
    Unavailable,
    default_consumer,
)
from corec_tasks.streams.names import PERSISTED
from corec_tasks.streams.schemas import PayloadError, payload_checker
from corec_tasks.wiring import persisted_streams

log = logging.getLogger(__name__)

#: The consumer group every persister joins, on every stream it persists.
GROUP = "corec_persister"
#: Inserts a batch into ``eventos`` without committing; returns the rows inserted.
Writer = Callable[[psycopg.Connection[Any], Sequence[EventRow]], int]
#: Batches written (and committed) at once, each on its own connection.
WRITERS = 2
#: How often a batch hit by a deadlock or serialization failure is retried at once.
_RETRIES = 3


@dataclass
class StreamStats:
    """What one stream's round did."""

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    batches: int = 0
    failed: int = 0
    deferred: int = 0
    trimmed: int = 0
    unavailable: str | None = None

    @classmethod
    def of(cls, r: RoundStats) -> StreamStats:
        """The persister's view of a consumer-loop round."""
        return cls(r.read, r.counts["inserted"], r.counts["duplicates"], r.dead_lettered,
                   r.reclaimed, r.batches, r.failed, r.deferred, r.trimmed,
                   r.unavailable)  # fmt: skip


@dataclass
class PersistStats:
    """Totals of one ``persist_once`` round, and the same per stream."""

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    failed: int = 0
    deferred: int = 0
    #: Why a round stopped early (PostgreSQL down); None if none did.
    unavailable: str | None = None
    streams: dict[str, StreamStats] = field(default_factory=dict)

    def add(self, stream: str, s: StreamStats) -> None:
        """Fold one stream's stats into the totals."""
        self.streams[stream] = s
        self.read += s.read
        self.inserted += s.inserted
        self.duplicates += s.duplicates
        self.dead_lettered += s.dead_lettered
        self.reclaimed += s.reclaimed
        self.failed += s.failed
        self.deferred += s.deferred
        self.unavailable = self.unavailable or s.unavailable


def entry_row(stream: str, entry: Entry, default_instance: str) -> EventRow:
    """The ``eventos`` row of ``entry``: key and timestamp fixed by its id, so a
    redelivery maps to the same row."""
    return EventRow(
        entry_key=f"{stream}:{entry.id}",
        canal=stream,
        datos=entry.payload.decode(),
        timestamp=entry.millis / 1000,
        instance_id=entry.instance_id or default_instance,
    )


def default_streams(settings: Settings) -> tuple[str, ...]:
    """What the persister lands by default: the framework's ``PERSISTED``, then the
    streams the enabled plugins list in ``persisted`` (read once per config file)."""
    return runtime().per_config(settings, "corec.default_streams", _default_streams)


def _default_streams(settings: Settings) -> tuple[str, ...]:
    extra = [s for s in persisted_streams(enabled(settings)) if s not in PERSISTED]
    return (*PERSISTED, *dict.fromkeys(extra))


def persist_once(
    settings: Settings,
    streams: Sequence[str] | None = None,
    consumer: str | None = None,
    max_batches: int = 10,
    conn: psycopg.Connection[Any] | None = None,
    *,
    writer: Writer = write_events,
) -> PersistStats:
    """Persist up to ``max_batches`` batches per stream (default: ``default_streams``).

    ``streams`` are unprefixed names; ``conn``, if given, must not be inside a
    transaction (each batch commits on it); ``writer`` inserts a batch without
    committing (the benchmark swaps in the row-by-row baseline). Returns totals and
    per-stream stats; with PostgreSQL down nothing is claimed and ``unavailable`` says
    why.
    """
    names = list(default_streams(settings) if streams is None else streams)
    consumer = consumer or default_consumer()
    stats = PersistStats()
    with _Connections(settings, conn) as dbs, StreamBus(settings) as bus:
        for stream in names:
            loop = ConsumerLoop(bus, _EventsHandler(settings, stream, dbs, writer), consumer)
            stats.add(stream, StreamStats.of(loop.run(stream, max_batches)))
    return stats


def lag(settings: Settings, streams: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per stream: ``length``, ``pending`` (delivered to the persister, not acked),
    ``lag`` (not yet delivered; None where Redis < 7 cannot tell) and ``last_id``."""
    out: dict[str, dict[str, Any]] = {}
    with StreamBus(settings) as bus:
        for stream in streams:
            key = bus.key(stream)
            info: dict[str, Any] = {"length": 0, "pending": 0, "lag": None, "last_id": None}
            try:
                raw: Any = bus.client.xinfo_stream(key)
            except redis.ResponseError:  # no such stream yet
                out[stream] = info
                continue
            info["length"] = int(raw["length"])
            last = raw.get("last-generated-id")
            info["last_id"] = last.decode() if isinstance(last, bytes) else last
            groups: Any = bus.client.xinfo_groups(key)
            for g in groups:
                name = g["name"]
                if (name.decode() if isinstance(name, bytes) else name) == GROUP:
                    info["pending"] = int(g["pending"])
                    info["lag"] = g.get("lag")
            out[stream] = info
    return out


class _Connections:
    """The round's PostgreSQL connections: the caller's one, or up to ``WRITERS`` own.

    Batch commits wait on the WAL flush; a second connection commits one batch while
    the next is copied. Extra connections open only when a second batch is in flight,
    so a round over quiet streams costs one connection.
    """

    def __init__(self, settings: Settings, conn: psycopg.Connection[Any] | None) -> None:
        self._url = libpq_url(settings.database_url)
        self._owned: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        if conn is not None:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raise StorageError(
                    "persist_once needs a connection outside any transaction: "
                    "it commits each batch before acking it"
                )
            self.limit = 1
            self._free = [conn]
        else:
            self.limit = WRITERS
            self._free = []

    def ensure(self) -> None:
        """At least one usable connection, or Unavailable (nothing is claimed then)."""
        with self._lock:
            self._free = [c for c in self._free if not c.closed]
            if self._free:
                return
        try:
            conn = self._open()
        except StorageError as exc:
            raise Unavailable(str(exc)) from exc
        with self._lock:
            self._free.append(conn)

    def _open(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._url, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise StorageError(f"cannot connect to PostgreSQL to persist streams: {exc}") from exc
        self._owned.append(conn)
        return conn

    @contextmanager
    def lease(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one batch (callers never exceed ``limit`` at once)."""
        with self._lock:
            conn = self._free.pop() if self._free else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        finally:
            with self._lock:
                self._free.append(conn)

    def __enter__(self) -> _Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._owned:
            conn.close()


#: One entry in the wire format: [id, i, t, d], as bytes (a split ``read_wire`` record).
_Wire = Sequence[bytes]

_NO_DATA = "no 'd' field: not CoreC's wire format (d, i, t)"


@dataclass(slots=True)
class _Batch:
    """A validated batch on its way to PostgreSQL: rows to write, entries to settle."""

    stream: str
    ids: list[str]  # of the rows, in the same order
    wire: list[_Wire]  # of the rows, kept to dead-letter a row PostgreSQL rejects
    rows: list[EventRow]
    dead: list[tuple[Entry, str]]


def _wire_entry(stream: str, w: _Wire) -> Entry:
    return Entry(stream, w[0].decode(), w[3], {F_DATA: w[3], F_INSTANCE: w[1], F_TIME: w[2]})


class _EventsHandler(Handler):
    """The persister as a consumer-loop handler for one stream.

    ``prepare`` (the loop's thread) validates and builds rows; ``apply`` (a writer
    thread, up to ``_Connections.limit`` at once, each batch on a connection of its own)
    COPYs and commits, so Redis work, COPY and each commit's WAL flush overlap.
    """

    group = GROUP

    def __init__(self, settings: Settings, stream: str, dbs: _Connections, writer: Writer) -> None:
        self.stream = stream
        self.dbs = dbs
        self.writer = writer
        self.instance = settings.instance_id
        self.check = payload_checker(stream)
        self.concurrency = dbs.limit

    @contextmanager
    def ready(self) -> Iterator[None]:
        """A live PostgreSQL connection before anything is claimed."""
        self.dbs.ensure()
        yield

    def prepare(self, batch: Batch) -> _Batch:
        """Sort entries into rows and dead letters: the hot loop, no object per entry
        beyond its row."""
        stream = batch.stream
        dead: list[tuple[Entry, str]] = []
        wire: Iterable[_Wire] = (rec.split(b"\n", 3) for rec in batch.records)
        if batch.entries:
            converted = []
            for e in batch.entries:
                f = e.fields
                if F_DATA in f:
                    converted.append(
                        (e.id.encode(), f.get(F_INSTANCE, b""), f.get(F_TIME, b""), e.payload)
                    )
                else:
                    dead.append((e, _NO_DATA))
            # Keep id order, so two persisters that race on the same entries insert
            # the same keys in the same order (they wait for each other, no deadlock).
            wire = sorted([*wire, *converted], key=lambda w: id_key(w[0].decode()))
        ids: list[str] = []
        kept: list[_Wire] = []
        rows: list[EventRow] = []
        instance = self.instance
        check = self.check
        prefix = f"{stream}:"
        for w in wire:
            eid = w[0].decode()
            try:
                check(w[3])
            except PayloadError as exc:
                dead.append((_wire_entry(stream, w), exc.reason))
                continue
            ids.append(eid)
            kept.append(w)
            # entry_row(), inlined: key and timestamp come from the entry id.
            rows.append(
                EventRow(
                    prefix + eid,
                    stream,
                    w[3].decode(),
                    int(eid[: eid.index("-")]) / 1000,
                    w[1].decode("utf-8", "replace") if w[1] else instance,
                )
            )
        return _Batch(stream, ids, kept, rows, dead)

    def apply(self, prepared: Any) -> Result:
        """Write and commit the rows; a row PostgreSQL rejects is dead-lettered alone."""
        b: _Batch = prepared
        inserted, rejected = self._write(b.rows)
        ids, dead = b.ids, b.dead
        if rejected:
            bad = {i for i, _ in rejected}
            dead = dead + [(_wire_entry(b.stream, b.wire[i]), why) for i, why in rejected]
            ids = [eid for i, eid in enumerate(ids) if i not in bad]
        out = Result(done=ids, dead=dead)
        out.counts["inserted"] = inserted
        out.counts["duplicates"] = len(ids) - inserted
        return out

    def _write(self, rows: list[EventRow]) -> tuple[int, list[tuple[int, str]]]:
        """Insert and commit ``rows``; return (inserted, [(index, reason)] rejected).

        A batch PostgreSQL rejects for its data (a value JSONB refuses) is split in
        halves until the bad rows are alone, so one bad entry costs only itself.
        """
        if not rows:
            return 0, []
        with self.dbs.lease() as db:
            return self._write_on(db, rows, 0)

    def _write_on(
        self, db: psycopg.Connection[Any], rows: list[EventRow], base: int
    ) -> tuple[int, list[tuple[int, str]]]:
        for attempt in range(_RETRIES):
            try:
                with db.transaction():
                    return self.writer(db, rows), []
            except psycopg.errors.TransactionRollback:
                # Deadlock or serialization failure against another persister working
                # on reclaimed entries: the transaction is gone, retrying is safe.
                if attempt == _RETRIES - 1:
                    raise
            except (StorageError, psycopg.DataError, psycopg.IntegrityError) as exc:
                cause = exc.__cause__ if isinstance(exc, StorageError) else exc
                if not isinstance(cause, psycopg.DataError | psycopg.IntegrityError):
                    raise
                if len(rows) == 1:
                    return 0, [(base, f"rejected by PostgreSQL: {_first_line(cause)}")]
                mid = len(rows) // 2
                n1, bad1 = self._write_on(db, rows[:mid], base)
                n2, bad2 = self._write_on(db, rows[mid:], base + mid)
                return n1 + n2, bad1 + bad2
        raise StreamError("unreachable")  # pragma: no cover


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
