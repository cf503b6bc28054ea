"""One consumer loop for every stream consumer: connect, reclaim, read, apply, settle, trim.

A consumer is a ``Handler`` for one consumer group; ``ConsumerLoop.run(stream)`` is one
round of it on one stream:

1. ``handler.ready()`` connects to what the handler needs *before* anything is claimed.
   If a dependency is down it raises ``Unavailable``: the round does nothing, so no
   delivery is counted and no valid entry moves towards the dead letter.
2. Entries pending longer than ``stream_claim_idle_ms`` (their consumer died, or they
   failed) are reclaimed with XAUTOCLAIM, then new ones are read, ``stream_batch`` at
   a time. An entry reclaimed after more than ``stream_max_deliveries`` deliveries (a
   consumer crashed while holding it) is dead-lettered without another try.
3. ``handler.prepare(batch)`` runs on the loop's thread, ``handler.apply(prepared)``
   on up to ``handler.concurrency`` worker threads (the persister overlaps its COPY and
   commit with the next read). ``apply`` answers per entry in a ``Result``: *done*
   (effect durable: ack), *dead* (dead-letter with this reason), *later* (a dependency
   went down: the round stops and the delivery of these entries is un-counted with
   XCLAIM RETRYCOUNT n-1 JUSTID), or *failed* (an exception).
4. An exception never holds back the other entries: a batch that raises is split in
   halves until the entry that raises is alone. If ``handler.poison(exc)`` (bad data:
   a decimal error, a value PostgreSQL rejects) it is dead-lettered at once; if
   ``handler.unavailable(exc)`` (a lost connection) it waits, uncounted; any other
   exception counts: the entry stays pending, is retried after
   ``stream_claim_idle_ms``, and failing its ``stream_max_deliveries``-th delivery it
   is dead-lettered with the exception as its reason.
5. A batch's acks and dead letters go in one MULTI (``StreamBus.settle``), after the
   handler made its effect durable.
6. ``StreamBus.trim`` then trims the stream, never below an entry any group needs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.handler import (
    Batch,
    Dead,
    Done,
    EntryHandler,
    Handler,
    Later,
    Result,
    Unavailable,
    Verdict,
    first_line,
)
from corec_tasks.streams.signing import check

__all__ = [
    "Batch",
    "ConsumerLoop",
    "Dead",
    "Done",
    "EntryHandler",
    "Handler",
    "Later",
    "Result",
    "RoundStats",
    "Unavailable",
    "Verdict",
    "consume",
    "default_consumer",
]

log = logging.getLogger(__name__)

#: Consumers idle this long with nothing pending are removed from their group.
PRUNE_IDLE_MS = 3_600_000


def default_consumer() -> str:
    """This process's consumer name: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class RoundStats:
    """What one round of one handler on one stream did."""

    stream: str
    group: str
    read: int = 0
    reclaimed: int = 0
    done: int = 0
    dead_lettered: int = 0
    failed: int = 0
    deferred: int = 0
    batches: int = 0
    trimmed: int = 0
    #: Why the round stopped early: a dependency was down (None: it was not).
    unavailable: str | None = None
    counts: Counter[str] = field(default_factory=Counter)

    def account(self, r: Result, dead: int, failed: int) -> None:
        self.done += len(r.done)
        self.dead_lettered += dead
        self.failed += failed
        self.deferred += len(r.later)
        self.counts.update(r.counts)
        if r.later:
            self.unavailable = self.unavailable or r.later_reason or "a dependency is down"


class ConsumerLoop:
    """Runs one handler's rounds on a bus (see the module docstring for the rules)."""

    #: Read the next batch while this one is prepared (handlers with concurrency > 1).
    read_ahead = True

    def __init__(
        self,
        bus: StreamBus,
        handler: Handler,
        consumer: str | None = None,
        *,
        batch: int | None = None,
        claim_idle_ms: int | None = None,
        max_deliveries: int | None = None,
    ) -> None:
        env = bus.settings.env
        self.bus = bus
        self.handler = handler
        self.group = handler.group
        self.consumer = consumer or default_consumer()
        self.batch = batch or env.stream_batch
        self.idle_ms = env.stream_claim_idle_ms if claim_idle_ms is None else claim_idle_ms
        self.max_deliveries = max_deliveries or env.stream_max_deliveries
        self._stop: str | None = None
        self._lock = threading.Lock()

    def run(self, stream: str, max_batches: int = 10) -> RoundStats:
        """One round on ``stream``: at most ``max_batches`` batches, reclaimed ones first."""
        s = RoundStats(stream, self.group)
        self._stop = None
        self.bus.ensure_group(stream, self.group, self.handler.start_id)
        try:
            with self.handler.ready():
                self._reclaim(stream, s, max_batches)
                self._read(stream, s, max_batches)
        except Unavailable as exc:
            s.unavailable = str(exc)
            log.warning("%s/%s: nothing claimed: %s", stream, self.group, exc)
        s.trimmed = self.bus.trim(stream)
        self.bus.prune_consumers(stream, self.group, max(PRUNE_IDLE_MS, 10 * self.idle_ms))
        if s.read:
            log.info("consumed %s/%s: %s", stream, self.group, s)
        return s

    # -- the two phases -------------------------------------------------------------------

    def _reclaim(self, stream: str, s: RoundStats, max_batches: int) -> None:
        # Reclaimed entries are rare: one batch at a time, inline.
        while s.batches < max_batches and self._stop is None:
            entries = self.bus.reclaim(stream, self.group, self.consumer, self.idle_ms, self.batch)
            if not entries:
                return
            s.batches += 1
            s.reclaimed += len(entries)
            s.read += len(entries)
            ids = [e.id for e in entries]
            counts = self.bus.delivery_counts(stream, self.group, ids, self.consumer)
            spent = [e for e in entries if counts.get(e.id, 1) > self.max_deliveries]
            if spent:
                reason = "delivered {} times without being processed by " + self.group
                dead = [(e, reason.format(counts.get(e.id, 1)), counts.get(e.id, 1))
                        for e in spent]  # fmt: skip
                self.bus.settle(stream, self.group, [], dead)
                s.dead_lettered += len(dead)
                for e, why, _ in dead:
                    log.warning("dead-lettered %s %s: %s", stream, e.id, why)
                gone = {e.id for e in spent}
                entries = [e for e in entries if e.id not in gone]
            batch = self._screen(Batch(stream, [], entries, counts), s) if entries else None
            if batch is not None:
                self._work(batch, s)

    def _read(self, stream: str, s: RoundStats, max_batches: int) -> None:
        limit = max(1, self.handler.concurrency)
        if limit == 1:
            while s.batches < max_batches and self._stop is None:
                batch = self._next(stream, s)
                if batch is None:
                    return
                self._work(batch, s)
            return
        # The next batch is read (Redis does the work; this process mostly waits) while
        # the current one is prepared here and earlier ones are applied on the workers.
        leftover: Batch | None = None
        with ThreadPoolExecutor(limit, thread_name_prefix=f"corec-{self.group}") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="corec-read") as reader:  # fmt: skip
            in_flight: deque[Future[None]] = deque()
            ahead: Future[Batch | None] | None = None
            if s.batches < max_batches:
                ahead = reader.submit(self._next, stream, s)
            if not self.read_ahead and ahead is not None:
                ahead.result()
            try:
                while ahead is not None:
                    batch, ahead = ahead.result(), None
                    if batch is None:
                        break
                    if self._stop is not None:
                        leftover = batch
                        break
                    if s.batches < max_batches:
                        ahead = reader.submit(self._next, stream, s)
                        if not self.read_ahead:
                            ahead.result()
                    prepared, error = self._prepare(batch)
                    if len(in_flight) == limit:
                        in_flight.popleft().result()
                    in_flight.append(pool.submit(self._finish, batch, prepared, error, s))
            except BaseException:
                # Let the batches in flight finish (their acks follow their effects),
                # but report the error that stopped the round, not theirs.
                pending: list[Future[Any]] = [*in_flight]
                if ahead is not None:
                    pending.append(ahead)
                wait(pending)
                raise
            while in_flight:
                in_flight.popleft().result()
            if ahead is not None:
                leftover = ahead.result()
        if leftover is not None:
            # Read ahead, never applied (the round stopped): give its deliveries back.
            self._uncount(leftover, leftover.all())
            with self._lock:
                s.deferred += len(leftover)

    def _next(self, stream: str, s: RoundStats) -> Batch | None:
        while True:
            records, others = self.bus.read_wire(stream, self.group, self.consumer, self.batch)
            if not records and not others:
                return None
            s.batches += 1
            s.read += len(records) + len(others)
            # Fresh reads were delivered once: no delivery count to look up.
            batch = self._screen(Batch(stream, records, others), s)
            if batch is not None:
                return batch

    def _screen(self, batch: Batch, s: RoundStats) -> Batch | None:
        """For a ``signed`` handler: dead-letter the entries without a valid signature
        (corec_tasks/streams/signing.py) before the handler sees them; return the rest,
        or None if none is left."""
        if not self.handler.signed:
            return batch
        key = self.bus.stream_key
        good: list[Entry] = []
        bad: list[tuple[Entry, str, int]] = []
        for e in batch.all():
            why = check(key, batch.stream, e.fields)
            if why is None:
                good.append(e)
            else:
                bad.append((e, f"{self.group}: {why}", batch.deliveries(e.id)))
        if bad:
            self.bus.settle(batch.stream, self.group, [], bad, alert=False)  # its own, below
            with self._lock:
                s.dead_lettered += len(bad)
            for e, why, _ in bad:
                log.warning("dead-lettered %s %s: %s", batch.stream, e.id, why)
            self.bus.alert_unsigned(batch.stream, self.group, bad)
            try:
                self.handler.refused([(e, why) for e, why, _ in bad])
            except Exception as exc:  # dead-lettered already; an answer lost is only logged
                log.warning("%s: refused() failed: %r", self.group, exc)
        if not good:
            return None
        return Batch(batch.stream, [], good, batch.counts)

    # -- one batch -----------------------------------------------------------------------

    def _prepare(self, batch: Batch) -> tuple[Any, BaseException | None]:
        try:
            return self.handler.prepare(batch), None
        except Exception as exc:
            return None, exc

    def _work(self, batch: Batch, s: RoundStats) -> None:
        prepared, error = self._prepare(batch)
        self._finish(batch, prepared, error, s)

    def _finish(
        self, batch: Batch, prepared: Any, error: BaseException | None, s: RoundStats
    ) -> None:
        """Apply (or isolate the failure of) one batch, then settle it."""
        if error is None:
            try:
                result = self.handler.apply(prepared)
            except Exception as exc:
                result = self._isolate(batch, exc)
        else:
            result = self._isolate(batch, error)
        self._settle(batch, result, s)

    def _attempt(self, batch: Batch) -> Result:
        try:
            return self.handler.apply(self.handler.prepare(batch))
        except Exception as exc:
            return self._isolate(batch, exc)

    def _isolate(self, batch: Batch, exc: BaseException) -> Result:
        """Split a batch that raised until the entries that raise are alone."""
        if self.handler.unavailable(exc):
            return Result(later=batch.all(), later_reason=first_line(exc))
        if len(batch) == 1:
            [entry] = batch.all()
            if self.handler.poison(exc):
                return Result(dead=[(entry, f"{self.group}: {first_line(exc)}")])
            return Result(failed=[(entry, exc)])
        left, right = batch.halves()
        out = self._attempt(left)
        if out.later:  # the dependency went down: the rest waits too
            out.later += right.all()
            return out
        return out.merge(self._attempt(right))

    def _settle(self, batch: Batch, r: Result, s: RoundStats) -> None:
        stream = batch.stream
        dead = [(e, why, batch.deliveries(e.id)) for e, why in r.dead]
        failed = 0
        for entry, exc in r.failed:
            n = batch.deliveries(entry.id)
            why = f"{self.group}: {first_line(exc)}"
            if n >= self.max_deliveries:
                dead.append((entry, f"{why} (delivery {n} of {self.max_deliveries})", n))
            else:
                failed += 1
                log.warning("%s %s failed in %s (delivery %d of %d, retried after %d ms): %s",
                            stream, entry.id, self.group, n, self.max_deliveries,
                            self.idle_ms, why)  # fmt: skip
        # The effect of r.done is durable: now, and only now, the entries leave the PEL.
        self.bus.settle(stream, self.group, r.done, dead)
        for e, why, _ in dead:
            log.warning("dead-lettered %s %s: %s", stream, e.id, why)
        if r.later:
            self._stop = r.later_reason or "a dependency is down"
            self._uncount(batch, r.later)
        with self._lock:  # batches settle on worker threads
            s.account(r, len(dead), failed)

    def _uncount(self, batch: Batch, entries: Sequence[Entry]) -> None:
        """Give back the deliveries of entries that waited for a dependency.

        XCLAIM with JUSTID does not count a delivery, RETRYCOUNT sets the counter back,
        and IDLE makes the entries reclaimable by the next round at once.
        """
        by_count: defaultdict[int, list[str]] = defaultdict(list)
        for e in entries:
            by_count[max(batch.deliveries(e.id) - 1, 0)].append(e.id)
        key = self.bus.key(batch.stream)
        pipe = self.bus.client.pipeline(transaction=False)
        for n, ids in by_count.items():
            claimed: list[Any] = ids
            pipe.xclaim(key, self.group, self.consumer, 0, claimed, idle=self.idle_ms,
                        retrycount=n, justid=True)  # fmt: skip
        pipe.execute()
        log.warning("%s/%s: %d entries wait for a dependency (not counted as deliveries): %s",
                    batch.stream, self.group, len(entries), self._stop)  # fmt: skip


def consume(
    bus: StreamBus,
    handler: Handler,
    streams: Sequence[str],
    consumer: str | None = None,
    max_batches: int = 10,
) -> dict[str, RoundStats]:
    """One round of ``handler`` on each of ``streams``; stats per stream."""
    loop = ConsumerLoop(bus, handler, consumer)
    return {stream: loop.run(stream, max_batches) for stream in streams}
