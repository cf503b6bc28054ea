"""What a stream consumer is, for the one consumer loop (``corec_tasks.streams.consumer``).

A ``Handler`` names its consumer group and makes a ``Batch`` durable in ``apply``,
answering per entry in a ``Result``: done, dead (with a reason), later (a dependency
is down) or failed (an exception). ``EntryHandler`` does it one entry at a time with a
``Verdict`` per entry. ``poison`` and ``unavailable`` sort exceptions into bad data
(dead-lettered at once) and a dependency that is down (waits, uncounted).
"""

from __future__ import annotations

import decimal
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from corec_tasks.errors import StreamError
from corec_tasks.streams.bus import Entry, entry_from_record, id_key
from corec_tasks.streams.schemas import PayloadError

#: A dependency is unreachable: retrying later will do (the delivery does not count).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
)
#: The entry's data itself is bad: another delivery cannot succeed.
_POISON: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    decimal.DecimalException,
    PayloadError,
)


class Unavailable(StreamError):
    """A handler's dependency is down: nothing is claimed or counted until it is back."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 5:
        yield cur
        cur, seen = cur.__cause__ or cur.__context__, seen + 1


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for a dead letter's reason."""
    text = str(exc).strip()
    if isinstance(exc, decimal.DecimalException) and text.startswith("[<class"):
        text = "a number out of range or not a number (decimal arithmetic refused it)"
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@dataclass(slots=True)
class Batch:
    """Entries read together: wire-format records (the hot path) and other entries.

    ``records`` are ``read_wire`` records ``b"<id>\\n<i>\\n<t>\\n<d>"``; ``entries``
    hold entries in other layouts and reclaimed ones; ``counts`` their deliveries
    (absent: 1, a fresh read).
    """

    stream: str
    records: list[bytes]
    entries: list[Entry]
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records) + len(self.entries)

    def deliveries(self, entry_id: str) -> int:
        """How many times ``entry_id`` has been delivered, this delivery included."""
        return self.counts.get(entry_id, 1)

    def all(self) -> list[Entry]:
        """Every entry as an ``Entry``, in id order."""
        out = [entry_from_record(self.stream, r) for r in self.records]
        if self.entries:
            out.extend(self.entries)
            if self.records:
                out.sort(key=lambda e: id_key(e.id))
        return out

    def halves(self) -> tuple[Batch, Batch]:
        """Two batches of half the entries each (to isolate one that raises)."""
        items = self.all()
        mid = len(items) // 2
        return (
            Batch(self.stream, [], items[:mid], self.counts),
            Batch(self.stream, [], items[mid:], self.counts),
        )


@dataclass
class Result:
    """What became of a batch's entries (each entry in at most one list)."""

    done: list[str] = field(default_factory=list)
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    failed: list[tuple[Entry, BaseException]] = field(default_factory=list)
    later: list[Entry] = field(default_factory=list)
    later_reason: str = ""
    #: The handler's own figures (rows inserted, duplicates, trades applied, ...).
    counts: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Result) -> Result:
        """Fold ``other`` into this result."""
        self.done += other.done
        self.dead += other.dead
        self.failed += other.failed
        self.later += other.later
        self.later_reason = self.later_reason or other.later_reason
        self.counts.update(other.counts)
        return self


class Handler:
    """One consumer group's work; subclass and implement ``apply`` (or use EntryHandler)."""

    #: The consumer group; every process running this handler joins it.
    group: str = ""
    #: Where a new group starts: "0" delivers what is already in the stream.
    start_id: str = "0"
    #: Batches applied at once, each on a worker thread of its own (1: inline).
    concurrency: int = 1
    #: Only entries signed with the stream key reach the handler; the loop dead-letters
    #: the others (corec_tasks/streams/signing.py). For handlers that move money.
    signed: bool = False

    def refused(self, bad: Sequence[tuple[Entry, str]]) -> None:
        """For a ``signed`` handler: the entries (and why) the loop just dead-lettered
        for lacking a valid signature; the command dispatcher answers them. No-op."""

    def ready(self) -> AbstractContextManager[object]:
        """Connect to the dependencies; raise Unavailable if one is down."""
        return nullcontext()

    def prepare(self, batch: Batch) -> Any:
        """Work done on the loop's thread while earlier batches are applied."""
        return batch

    def apply(self, prepared: Any) -> Result:
        """Make the effect of the prepared batch durable; say what became of each entry."""
        raise NotImplementedError

    def unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means a dependency is down (the entry waits, uncounted)."""
        return any(isinstance(e, _UNAVAILABLE) for e in _causes(exc))

    def poison(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the entry's data is bad (dead-lettered at once)."""
        return any(isinstance(e, _POISON) for e in _causes(exc))


@dataclass(frozen=True, slots=True)
class Done:
    """The entry's effect is durable (or there is none); ``tag`` is counted."""

    tag: str = "done"


@dataclass(frozen=True, slots=True)
class Dead:
    """The entry can never be applied: dead-letter it with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Later:
    """A dependency is down: stop the round; this delivery does not count."""

    reason: str


Verdict = Done | Dead | Later


class EntryHandler(Handler):
    """A handler that applies one entry at a time; ``handle`` gives each a verdict."""

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        """Apply ``entry`` (delivered ``deliveries`` times); exceptions are isolated."""
        raise NotImplementedError

    def apply(self, prepared: Any) -> Result:
        batch: Batch = prepared
        out = Result()
        items = batch.all()
        for i, entry in enumerate(items):
            try:
                verdict = self.handle(entry, batch.deliveries(entry.id))
            except Exception as exc:
                if self.unavailable(exc):
                    verdict = Later(first_line(exc))
                elif self.poison(exc):
                    out.dead.append((entry, f"{self.group}: {first_line(exc)}"))
                    continue
                else:
                    out.failed.append((entry, exc))
                    continue
            if isinstance(verdict, Done):
                out.done.append(entry.id)
                out.counts[verdict.tag] += 1
            elif isinstance(verdict, Dead):
                out.dead.append((entry, verdict.reason))
            else:
                out.later, out.later_reason = items[i:], verdict.reason
                break
        return out
