"""Stream-fed blocks: what a block bound to a stream reads for one run, and the acks.

A block whose spec names a ``stream`` reads it through the consumer group
``corec_block:<group>`` (one per config block, created at registration at the
stream's end), as consumer ``<block id>``. Each run takes at most one entry per
entity: first the entries already delivered to it and not acked (a run that died
before its write), then new ones. Entity ``cursor + j`` processes entry ``j``
(round-robin over the block's entities).

On a stream a plugin declares signed (``channels.signed``), an entry without a valid
signature never reaches the block: it is dead-lettered with its reason and acked, and
one ``error`` alert goes out per stream and hour, as the consumer loop does.

Exactly once: the ids a run consumed are stored in the block's record, in the same
compare-and-set write as its new state (``feed.entries``), and acked only after
that write. Every later step of the block (a redelivered run of the same cycle, or
the next cycle) acks them again before reading, so an entry whose ack was lost
(a worker killed between write and ack) is never read again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import redis

from corec_tasks.blocks.processors import EntryMeta, Payload
from corec_tasks.blocks.store import BlockStore, StoredBlock, ensure_feed_group, feed_group
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.signing import check, entry_signature, signed_streams

log = logging.getLogger(__name__)

#: Entries pending for a consumer that is no longer a block (merged away) are claimed
#: by a live block of the group once idle this long.
ORPHAN_IDLE_MS = 1000


class EntryMetas(Sequence[EntryMeta]):
    """Where each payload came from (``ProcessorContext.entries``), built only for the
    entries a processor asks about: most processors never look, and building one per
    entry would sit on the hot path of every stream-fed block."""

    __slots__ = ("_fields", "_ids")

    def __init__(self, ids: list[str], fields: list[Any]) -> None:
        self._ids, self._fields = ids, fields

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> EntryMeta: ...

    @overload
    def __getitem__(self, i: slice) -> list[EntryMeta]: ...

    def __getitem__(self, i: int | slice) -> EntryMeta | list[EntryMeta]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        fields = self._fields[i]
        return EntryMeta(self._ids[i], _s(fields.get(b"i", b"")), entry_signature(fields))


@dataclass(slots=True)
class Feed:
    """One run's input: entry ids, their payloads and raw fields, in processing order."""

    ids: list[str] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    fields: list[Any] = field(default_factory=list)

    @property
    def meta(self) -> EntryMetas:
        """Who sent each entry (id, producer, signature), made on demand."""
        return EntryMetas(self.ids, self.fields)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _items(resp: Any) -> list[Any]:
    # RESP3 answers {stream: entries} (or [[stream, entries]] inside), RESP2 [[stream, entries]].
    if not resp:
        return []
    if isinstance(resp, dict):
        return list(next(iter(resp.values())))
    return list(resp[0][1])


def take(settings: Settings, store: BlockStore, stored: StoredBlock) -> Feed:
    """The entries ``stored`` processes this run (at most one per entity)."""
    spec = stored.block.spec
    assert spec.stream is not None
    r = store.r
    key, group, me = settings.key(spec.stream), feed_group(spec.group), spec.id
    done = [str(i) for i in stored.feed.get("entries", [])]
    if done:
        r.xack(key, group, *done)  # the last run's entries: recorded, maybe not acked
    want = len(stored.block.entities)
    feed = Feed()
    if want == 0:
        return feed
    try:
        _adopt_orphans(store, key, group, me)
        raw = _items(r.xreadgroup(group, me, {key: "0"}, count=want))
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        ensure_feed_group(settings, r, spec.stream, group)
        raw = []
    if len(raw) < want:
        raw += _items(r.xreadgroup(group, me, {key: ">"}, count=want - len(raw)))
    if raw and spec.stream in signed_streams(settings):
        raw = _screen(settings, r, spec.stream, group, raw)
    gone = []
    for eid, fields in raw:
        eid = _s(eid)
        payload = _payload(fields)
        if payload is None:
            gone.append(eid)  # trimmed before it was read, or not a JSON object
            continue
        feed.ids.append(eid)
        feed.payloads.append(payload)
        feed.fields.append(fields)
    if gone:
        log.warning("[feed] %s: %d entries of %s unreadable (trimmed or not a JSON "
                    "object); skipped", me, len(gone), spec.stream)  # fmt: skip
        r.xack(key, group, *gone)
    return feed


def _screen(
    settings: Settings, r: redis.Redis, stream: str, group: str, raw: list[Any]
) -> list[Any]:
    """The entries of ``raw`` with a valid signature; the others dead-lettered and
    acked in one MULTI (so none is dead-lettered twice) and alerted, as the consumer
    loop does (``StreamBus.settle``, ``StreamBus.alert_unsigned``)."""
    bus = StreamBus(settings, r)
    good, bad = [], []
    for eid, fields in raw:
        why = check(bus.stream_key, stream, fields or {})
        if why is None:
            good.append((eid, fields))
            continue
        entry = Entry(stream, _s(eid), (fields or {}).get(b"d", b""), fields or {})
        bad.append((entry, f"{group}: {why}", 1))
        log.warning("[feed] dead-lettered %s %s: %s", stream, entry.id, why)
    if bad:
        bus.settle(stream, group, [], bad, alert=False)
        bus.alert_unsigned(stream, group, bad)
    return good


def _payload(fields: Any) -> Payload | None:
    if not fields:
        return None
    data = fields.get(b"d", fields.get("d"))
    if data is None:
        # A foreign producer: its fields are the payload.
        return {_s(k): _s(v) for k, v in fields.items()}
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _adopt_orphans(store: BlockStore, key: str, group: str, me: str) -> None:
    """Claim entries pending for consumers that are no longer blocks (merged away)."""
    r = store.r
    summary: Any = r.xpending(key, group)
    # Only consumers holding entries are listed: in steady state none or a few.
    others = [_s(c["name"]) for c in summary.get("consumers") or [] if _s(c["name"]) != me]
    if not others:
        return
    pipe = r.pipeline(transaction=False)
    for name in others:
        pipe.exists(store.key(name))
    for name, alive in zip(others, pipe.execute(), strict=True):
        if alive:
            continue
        rows: Any = r.xpending_range(key, group, "-", "+", 1000, consumername=name)
        ids: list[Any] = [_s(row["message_id"]) for row in rows]
        if ids:
            r.xclaim(key, group, me, ORPHAN_IDLE_MS, ids)


def ack(settings: Settings, client: redis.Redis, blocks: list[StoredBlock]) -> None:
    """Ack what each (written) block's last run consumed; one round trip."""
    fed = [s for s in blocks if s.block.spec.stream and s.feed.get("entries")]
    if not fed:
        return
    pipe = client.pipeline(transaction=False)
    for s in fed:
        spec = s.block.spec
        assert spec.stream is not None
        pipe.xack(settings.key(spec.stream), feed_group(spec.group), *s.feed["entries"])
    pipe.execute()
