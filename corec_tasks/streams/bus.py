"""The Redis Streams bus: wire format, publishing, consumer groups and the dead letter.

Wire format. Every entry CoreC publishes has three fields, kept minimal for speed:

=====  =================================================================
``d``  the payload: one JSON object, UTF-8, compact separators
``i``  the publishing instance's id (``Settings.instance_id``)
``t``  publish time, epoch milliseconds, decimal ASCII
``s``  on signed streams only: the entry's HMAC (``corec_tasks.streams.signing``)
=====  =================================================================

The entry id Redis assigns (``<ms>-<seq>``) is the message's identity: consumers
derive idempotency keys and timestamps from it, so a redelivery maps to the same key.
Entries with other fields (a foreign producer) are still read; without ``d`` the
persister dead-letters them.

Reads go through a small server-side script (XREADGROUP, then one
``<id>\\n<i>\\n<t>\\n<d>`` record per entry) and acks through another (XACK with the
ids as one argument): redis-py's pure-Python RESP parser and packer otherwise cost
more than everything else on the persister's path when hiredis is not installed.

Dead-letter entries (stream ``corec_dead_letter``) have the fields ``stream`` (the
unprefixed source stream), ``id`` (the source entry id), ``reason``, ``deliveries``,
``payload`` (the original ``d`` bytes; the other fields as JSON if ``d`` was missing),
``instance_id`` (the original producer, if known) and ``time`` (epoch ms). The dead
letter is never trimmed automatically: an operator inspects it
(``corec streams dead-letter``) and deletes what is handled.

Every method takes unprefixed stream names; ``Settings.key`` adds the deployment's
prefix.

Trimming never drops an entry a consumer group still needs. XADD carries no MAXLEN;
``trim`` (run by every consumer round and, throttled, by publishers) keeps the newest
``stream_maxlen`` entries *and* every entry at or after the oldest one still pending or
not yet delivered in any group of the stream (XINFO GROUPS last-delivered-id, XPENDING
minimum id; XTRIM MINID, Redis >= 6.2). Only a stream without any group is capped
blindly at ``MAXLEN ~ stream_maxlen``. When a group's backlog (pending + undelivered)
passes 80% of ``stream_maxlen``, one warning goes to ``corec_alerts`` per stream and
``ALERT_EVERY_S``; the backlog is measured at most every ``BACKLOG_CHECK_EVERY_S``.

Publishing rides out short Redis outages (a restart, a failover): a connection error is
retried with backoff for ``COREC_PUBLISH_RETRY_S`` seconds, then one ``StreamError``
says so. A retry after a reply was lost may append the entry a second time (at least
once): consumers are idempotent by their own keys.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from corec_tasks.errors import StreamError
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings
from corec_tasks.streams import markers
from corec_tasks.streams.names import ALERTS, DEAD_LETTER
from corec_tasks.streams.signing import F_SIG, sign, signed_streams, stream_key

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How long one (source, subject) stays silent after it alerted (:meth:`StreamBus.alert`).
ALERT_TTL_S = 3600
#: A group's backlog above this share of ``stream_maxlen`` raises an alert.
ALERT_RATIO = 0.8
#: At most one backlog alert per stream this often (across every process).
ALERT_EVERY_S = 600
#: A backlog is measured at most this often per stream (across every process): on
#: Redis 6.2 counting undelivered entries costs up to ALERT_RATIO x maxlen steps.
BACKLOG_CHECK_EVERY_S = 10
#: A publisher trims a stream it writes to at most this often (consumers trim each round).
TRIM_EVERY_S = 1.0
#: Errors a publish retries: Redis restarting, loading its AOF, or unreachable.
_RETRYABLE = (redis.ConnectionError, redis.TimeoutError)

F_DATA = b"d"
F_INSTANCE = b"i"
F_TIME = b"t"

# XREADGROUP ">" for the hot path. Each entry in the wire format comes back as one
# record "<id>\n<i>\n<t>\n<d>" (d last: it may hold newlines; id, i and t must not),
# so the client parses one RESP element per entry instead of nine: redis-py's
# pure-Python parser is most of a read's cost when hiredis is absent. Other entries
# come back as ids only.
_READ_LUA = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], '>')
local std, other = {}, {}
if not r then return {std, other} end
local find = string.find
for _, e in ipairs(r[1][2]) do
  local f = e[2]
  local d, i, t, extra = nil, nil, nil, false
  if f then
    for j = 1, #f, 2 do
      local k = f[j]
      if k == 'd' and not d then d = f[j + 1]
      elseif k == 'i' and not i then i = f[j + 1]
      elseif k == 't' and not t then t = f[j + 1]
      else extra = true end
    end
  end
  if d and i and t and not extra and not find(i, '\\n', 1, true)
      and not find(t, '\\n', 1, true) then
    std[#std + 1] = e[1] .. '\\n' .. i .. '\\n' .. t .. '\\n' .. d
  else
    other[#other + 1] = e[1]
  end
end
return {std, other}
"""

# XACK of ARGV[2] (ids joined by ","): one argument instead of one per id, in chunks
# that stay below Lua's unpack() limit.
_ACK_LUA = """
local ids, n, acked = {}, 0, 0
for id in string.gmatch(ARGV[2], '[^,]+') do
  n = n + 1
  ids[n] = id
  if n == 1000 then
    acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
    ids, n = {}, 0
  end
end
if n > 0 then acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) end
return acked
"""

# Delete consumer ARGV[2] of group ARGV[1] only if it holds no pending entry.
_DEL_IDLE_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""

# Trim KEYS[1] to ARGV[1] (maxlen) entries, never below the oldest entry any group still
# needs; ARGV[2] = 1 asks for the largest group backlog (pending + undelivered) counted
# up to ARGV[3]. Returns {trimmed, backlog or -1, group of that backlog}.
_TRIM_LUA = """
local key, maxlen = KEYS[1], tonumber(ARGV[1])
local want, upto = ARGV[2] == '1', tonumber(ARGV[3])
local len = redis.call('XLEN', key)
if len <= maxlen and (not want or len < upto) then return {0, -1, ''} end
local groups = redis.call('XINFO', 'GROUPS', key)
if #groups == 0 then
  if len <= maxlen then return {0, -1, ''} end
  return {redis.call('XTRIM', key, 'MAXLEN', '~', maxlen), -1, ''}
end
local function parse(id)
  local d = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local safe, worst, worst_group = nil, -1, ''
for _, g in ipairs(groups) do
  local f = {}
  for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
  local ms, seq = parse(f['last-delivered-id'])
  local keep = ms .. '-' .. (seq + 1)
  local pending = tonumber(f['pending'])
  if pending > 0 then
    local p = redis.call('XPENDING', key, f['name'])
    if less(p[2], keep) then keep = p[2] end
  end
  if safe == nil or less(keep, safe) then safe = keep end
  if want then
    local undelivered = f['lag']
    if type(undelivered) ~= 'number' then
      local room = upto - pending
      undelivered = 0
      if room > 0 then
        undelivered = #redis.call('XRANGE', key, '(' .. f['last-delivered-id'], '+',
                                  'COUNT', room)
      end
    end
    if pending + undelivered > worst then
      worst, worst_group = pending + undelivered, f['name']
    end
  end
end
local trimmed = 0
if len > maxlen then
  local excess = len - maxlen
  local below = #redis.call('XRANGE', key, '-', '(' .. safe, 'COUNT', excess)
  if below >= excess then
    trimmed = redis.call('XTRIM', key, 'MAXLEN', '~', maxlen)
  elseif below > 0 then
    trimmed = redis.call('XTRIM', key, 'MINID', '~', safe)
  end
end
return {trimmed, worst, worst_group}
"""


@dataclass(slots=True)
class Entry:
    """One stream entry as read: unprefixed stream name, id, payload bytes, all fields.

    Not frozen: a frozen dataclass's __init__ costs twice as much, and the persister
    creates one per entry on its hot path. Treat it as read-only.
    """

    stream: str
    id: str
    payload: bytes
    fields: Mapping[bytes, bytes] = field(repr=False)

    @property
    def instance_id(self) -> str | None:
        """The producer's instance id, if it sent one."""
        raw = self.fields.get(F_INSTANCE)
        return raw.decode("utf-8", "replace") if raw is not None else None

    @property
    def millis(self) -> int:
        """The millisecond part of the entry id (when Redis accepted it)."""
        return int(self.id.partition("-")[0])

    def original_bytes(self) -> bytes:
        """The payload as sent; for a foreign entry without ``d``, its fields as JSON."""
        if F_DATA in self.fields:
            return self.payload
        return _fields_json(self.fields)


class StreamBus:
    """Publish to and consume from CoreC's streams (one Redis client, thread-safe)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self._own_client = client is None
        self.client: redis.Redis = client if client is not None else redis_client(settings)
        # The hot read path skips redis-py's reply parsing (a dict per entry built in
        # Python, then rebuilt here): same connections, but XREADGROUP answers raw.
        self._raw = redis.Redis(connection_pool=self.client.connection_pool)
        self._raw.set_response_callback("XREADGROUP", _raw_reply)
        self._read_script = self.client.register_script(_READ_LUA)
        self._ack_script = self.client.register_script(_ACK_LUA)
        self._trim_script = self.client.register_script(_TRIM_LUA)
        self._instance = settings.instance_id.encode()
        self._maxlen = settings.env.stream_maxlen
        self._retry_s = settings.env.publish_retry_s
        self._wait_replicas = settings.env.wait_replicas
        self._trimmed_at: dict[str, float] = {}
        self._publisher: redis.Redis | None = None
        self._signed: frozenset[str] | None = None
        self._stream_key: bytes | None = None

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the Redis client if this bus created it, and the publishing client."""
        if self._own_client:
            self.client.close()
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    @property
    def publisher(self) -> redis.Redis:
        """The client publishes go through: no retries of its own, so ``_retrying``
        alone decides how long a publish waits for Redis (redis-py's default retries
        would add seconds per attempt), and bounded socket timeouts."""
        if self._publisher is None:
            self._publisher = redis_client(
                self.settings,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=2,
                socket_timeout=10,
                socket_keepalive=True,
            )
        return self._publisher

    def __enter__(self) -> StreamBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def key(self, stream: str) -> str:
        """The Redis key of ``stream`` (with the deployment's prefix)."""
        return self.settings.key(stream)

    # -- publishing ------------------------------------------------------------------

    def encode(self, stream: str, payload: Mapping[str, Any]) -> dict[bytes, bytes]:
        """The entry fields for ``payload``; StreamError if it cannot travel as JSON."""
        if not isinstance(payload, Mapping):
            raise StreamError(
                f"payload for {stream} must be a JSON object (a dict), got {type(payload).__name__}"
            )
        try:
            data = json.dumps(
                payload,
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,  # NaN/Infinity are not JSON; PostgreSQL would reject them
                default=_json_default,
            ).encode()
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise StreamError(f"payload for {stream} cannot be sent as JSON: {exc}") from None
        fields = {F_DATA: data, F_INSTANCE: self._instance, F_TIME: b"%d" % (time.time() * 1000)}
        if stream in self.signed_streams:
            fields[F_SIG] = sign(self.stream_key, stream, self._instance, fields[F_TIME], data)
        return fields

    @property
    def signed_streams(self) -> frozenset[str]:
        """Streams whose entries this bus signs (declared by the enabled plugins)."""
        if self._signed is None:
            self._signed = signed_streams(self.settings)
        return self._signed

    @property
    def stream_key(self) -> bytes:
        """The deployment's stream key (corec_tasks/streams/signing.py), read once."""
        if self._stream_key is None:
            self._stream_key = stream_key(self.settings)
        return self._stream_key

    def publish(self, stream: str, payload: Mapping[str, Any]) -> str:
        """Append ``payload`` to ``stream``; return the entry id.

        Retries a Redis outage for ``COREC_PUBLISH_RETRY_S``, then raises StreamError.
        """
        fields: dict[Any, Any] = self.encode(stream, payload)
        key = self.key(stream)

        def send() -> Any:
            if self._wait_replicas:
                return self._replicated(stream, key, [fields])[0]
            return self.publisher.xadd(key, fields)

        entry_id = self._retrying(stream, send)
        self.trim_throttled(stream)
        return _str(entry_id)

    def publish_many(
        self, stream: str, payloads: Iterable[Mapping[str, Any]], chunk: int = 1000
    ) -> list[str]:
        """Append many payloads, pipelined ``chunk`` at a time; return the ids in order.

        Each chunk is one MULTI (all or none of it is appended) retried like ``publish``;
        on StreamError the chunks before it are published, the rest are not.
        """
        if chunk < 1:
            raise StreamError(f"chunk must be >= 1, got {chunk}")
        key = self.key(stream)
        ids: list[str] = []
        batch: list[dict[Any, Any]] = []

        def send() -> list[Any]:
            if self._wait_replicas:
                return self._replicated(stream, key, batch)
            pipe = self.publisher.pipeline(transaction=True)
            for fields in batch:
                pipe.xadd(key, fields)
            return pipe.execute()

        for payload in payloads:
            batch.append(self.encode(stream, payload))
            if len(batch) == chunk:
                ids.extend(_str(i) for i in self._retrying(stream, send))
                batch = []
        if batch:
            ids.extend(_str(i) for i in self._retrying(stream, send))
        self.trim_throttled(stream)
        return ids

    def _replicated(self, stream: str, key: str, batch: list[dict[Any, Any]]) -> list[Any]:
        """XADD ``batch`` (in MULTI when more than one), then ``WAIT`` for the replicas on
        the same connection (WAIT counts that connection's writes); the entry ids.

        Redis replicates asynchronously, so an entry the master acknowledged can vanish
        in a failover. Waiting until ``COREC_REDIS_WAIT_REPLICAS`` replicas hold it makes
        an acknowledged entry one that survives the master's loss. Too few in time is a
        StreamError, never retried here: the entry is on the master and may still land,
        but it was not acknowledged.
        """
        atomic = len(batch) > 1
        wait_ms = self.settings.env.redis_wait_ms
        pipe: Any = self.publisher.pipeline(transaction=False)  # one connection, in order
        if atomic:
            pipe.execute_command("MULTI")
        for fields in batch:
            pipe.xadd(key, fields)
        if atomic:
            pipe.execute_command("EXEC")
        pipe.execute_command("WAIT", self._wait_replicas, wait_ms)
        replies: list[Any] = pipe.execute()
        confirmed = int(replies[-1])
        if confirmed < self._wait_replicas:
            raise StreamError(
                f"{stream}: {confirmed} of {self._wait_replicas} Redis replicas confirmed the "
                f"entry within {wait_ms} ms (COREC_REDIS_WAIT_MS); it may not survive a "
                "failover, so it is not acknowledged"
            )
        return list(replies[-2]) if atomic else replies[:-1]

    def _retrying(self, stream: str, call: Callable[[], _T]) -> _T:
        """``call()``, retried with jittered backoff while Redis is unreachable."""
        deadline = time.monotonic() + self._retry_s
        delay = 0.05
        while True:
            try:
                return call()
            except _RETRYABLE as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamError(
                        f"cannot publish to {stream}: Redis unreachable for "
                        f"{self._retry_s:g} s (COREC_PUBLISH_RETRY_S): {exc}"
                    ) from exc
                time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, 1.0)

    # -- trimming --------------------------------------------------------------------

    def trim_throttled(self, stream: str) -> None:
        """A publisher's throttled ``trim`` (a stream nobody consumes is capped here)."""
        now = time.monotonic()
        if now - self._trimmed_at.get(stream, -TRIM_EVERY_S) < TRIM_EVERY_S:
            return
        self._trimmed_at[stream] = now
        try:
            self.trim(stream, self.publisher)  # no client retries: a publish never waits on it
        except redis.RedisError as exc:  # the entry is published; trimming can wait
            log.warning("%s: trim failed: %s", stream, exc)

    def trim(self, stream: str, client: redis.Redis | None = None) -> int:
        """Trim ``stream`` to ``stream_maxlen`` without dropping any entry a group still
        needs; alert (rate-limited) on a backlog over ``ALERT_RATIO`` of the cap.

        Returns how many entries were removed. The dead letter is never trimmed.
        """
        if stream == DEAD_LETTER:
            return 0
        key = self.key(stream)
        threshold = max(1, int(self._maxlen * ALERT_RATIO))
        marker = f"corec:streams:backlog_alert:{stream}"
        checked = f"{marker}:checked"
        c = client or self.client
        now = time.time()
        want = stream != ALERTS and not any(held for held, _ in markers.read(
            self.settings, c, self.stream_key,
            [(checked, BACKLOG_CHECK_EVERY_S), (marker, ALERT_EVERY_S)], now))  # fmt: skip
        reply: Any = self._trim_script(
            keys=[key], args=[self._maxlen, 1 if want else 0, threshold], client=c
        )
        trimmed, backlog, group = int(reply[0]), int(reply[1]), _str(reply[2])
        if backlog >= 0:  # it was counted: not again for a while
            markers.put(self.settings, c, self.stream_key, checked, BACKLOG_CHECK_EVERY_S, now)
        if backlog >= threshold and markers.take(self.settings, c, self.stream_key, marker,
                                                 ALERT_EVERY_S, now):  # fmt: skip
            message = (
                f"stream {stream}: group {group} has {backlog}+ entries not yet consumed, "
                f"over {ALERT_RATIO:.0%} of COREC_STREAM_MAXLEN ({self._maxlen}); they are "
                "kept (never trimmed unread): is its consumer running?"
            )
            log.warning(message)
            self.publish(ALERTS, {"level": "warning", "source": "streams", "message": message})
        return trimmed

    # -- consuming -------------------------------------------------------------------

    def ensure_group(self, stream: str, group: str, start_id: str = "0") -> bool:
        """Create ``group`` on ``stream`` (and the stream); True if it was created.

        ``start_id`` "0" delivers what is already in the stream; "$" only new entries.
        """
        try:
            self.client.xgroup_create(self.key(stream), group, id=start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise StreamError(f"cannot create group {group!r} on {stream}: {exc}") from None
        return True

    def read(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int,
        block_ms: int | None = None,
    ) -> list[Entry]:
        """New entries for ``consumer`` in ``group`` (XREADGROUP ">"); [] if none."""
        if block_ms is not None:  # scripts cannot block
            return self._read_blocking(stream, group, consumer, count, block_ms)
        records, others = self.read_wire(stream, group, consumer, count)
        out = [entry_from_record(stream, rec) for rec in records]
        if others:
            out.extend(others)
            out.sort(key=lambda e: id_key(e.id))
        return out

    def read_wire(
        self, stream: str, group: str, consumer: str, count: int
    ) -> tuple[list[bytes], list[Entry]]:
        """``read`` for hot loops: the entries in the wire format as records
        ``b"<id>\\n<i>\\n<t>\\n<d>"`` (split with ``rec.split(b"\\n", 3)``; no object
        per entry), and the entries with other fields as ``Entry`` objects."""
        key = self.key(stream)
        try:
            records, other = self._read_script(keys=[key], args=[group, consumer, count])
        except redis.ResponseError as exc:
            raise _group_error(stream, group, exc) from None
        # Entries in another layout (a foreign producer): fetched whole, rare.
        return records, self._fetch(stream, key, [_str(i) for i in other]) if other else []

    def _read_blocking(
        self, stream: str, group: str, consumer: str, count: int, block_ms: int
    ) -> list[Entry]:
        args = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count, "BLOCK", block_ms]
        try:
            raw: Any = self._raw  # redis-py's execute_command is untyped
            resp: Any = raw.execute_command(*args, "STREAMS", self.key(stream), ">")
        except redis.ResponseError as exc:
            raise _group_error(stream, group, exc) from None
        if not resp:
            return []
        # RESP3 answers {stream: entries}, RESP2 [[stream, entries]]; one stream either way.
        items = next(iter(resp.values())) if isinstance(resp, dict) else resp[0][1]
        return [_entry(stream, eid, flat) for eid, flat in items if flat is not None]

    def _fetch(self, stream: str, key: str, ids: Sequence[str]) -> list[Entry]:
        pipe = self._raw.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(key, entry_id, entry_id)
        out = []
        for entry_id, found in zip(ids, pipe.execute(), strict=True):
            # Trimmed since it was read: nothing left to persist, but it is pending.
            fields = dict(found[0][1]) if found else {}
            out.append(Entry(stream, entry_id, fields.get(F_DATA, b""), fields))
        return out

    def reclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[Entry]:
        """Claim up to ``count`` entries idle for ``min_idle_ms`` (XAUTOCLAIM, whole PEL).

        Entries deleted from the stream meanwhile (trimmed) cannot be delivered: they
        are dropped from the pending list and logged.
        """
        key = self.key(stream)
        out: list[Entry] = []
        gone: list[bytes | str] = []
        anonymous = False  # Redis 6.2 answers nil, without the id, for a deleted entry
        cursor: bytes | str = "0-0"
        while len(out) < count:
            try:
                resp: Any = self.client.xautoclaim(
                    key, group, consumer, min_idle_ms, cursor, count=count - len(out)
                )
            except redis.ResponseError as exc:
                raise _group_error(stream, group, exc) from None
            cursor = resp[0]
            for eid, fields in resp[1]:
                if eid is None or not fields:
                    anonymous = anonymous or eid is None
                    if eid is not None:
                        gone.append(eid)
                    continue
                out.append(Entry(stream, _str(eid), fields.get(F_DATA, b""), fields))
            if len(resp) > 2:  # Redis >= 7 reports (and un-pends) deleted entries here
                gone.extend(resp[2])
            if _str(cursor) == "0-0":
                break
        if anonymous:
            gone.extend(self._deleted_pending(key, group, consumer, {e.id for e in out}))
        if gone:
            # Redis 6.2 keeps them pending forever unless acked; on 7 this is a no-op.
            self.client.xack(key, group, *gone)
            log.warning(
                "%s: %d pending entries were trimmed before %s could process them",
                stream,
                len(gone),
                group,
            )
        return out

    def _deleted_pending(self, key: str, group: str, consumer: str, alive: set[str]) -> list[str]:
        """Ids pending for ``consumer`` whose entry no longer exists (Redis 6.2 only)."""
        rows: Any = self.client.xpending_range(key, group, "-", "+", 10_000, consumer)
        ids = [i for i in (_str(r["message_id"]) for r in rows) if i not in alive]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(key, entry_id, entry_id)
        return [i for i, found in zip(ids, pipe.execute(), strict=True) if not found]

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge ``ids``; return how many were pending."""
        if not ids:
            return 0
        return int(self._ack_script(keys=[self.key(stream)], args=[group, ",".join(ids)]))

    def delivery_counts(
        self, stream: str, group: str, ids: Sequence[str], consumer: str | None = None
    ) -> dict[str, int]:
        """How many times each pending id was delivered (XPENDING); acked ids are absent."""
        if not ids:
            return {}
        wanted = set(ids)
        lo = min(ids, key=id_key)
        hi = max(ids, key=id_key)
        page = max(100, len(ids))
        out: dict[str, int] = {}
        key = self.key(stream)
        while True:
            rows: Any = self.client.xpending_range(key, group, lo, hi, page, consumername=consumer)
            for row in rows:
                mid = _str(row["message_id"])
                if mid in wanted:
                    out[mid] = int(row["times_delivered"])
            if len(rows) < page or len(out) == len(wanted):
                return out
            lo = "(" + _str(rows[-1]["message_id"])  # exclusive start (Redis >= 6.2)

    def prune_consumers(self, stream: str, group: str, min_idle_ms: int) -> list[str]:
        """Delete consumers of ``group`` idle over ``min_idle_ms`` with nothing pending.

        Every worker process joins as ``<host>-<pid>``, so without this the group would
        collect one dead consumer per process ever started. The pending check and the
        delete run as one script: a consumer holding entries is never deleted (that
        would make its entries unclaimable).
        """
        key = self.key(stream)
        try:
            consumers: Any = self.client.xinfo_consumers(key, group)
        except redis.ResponseError:
            return []
        removed = []
        for c in consumers:
            if int(c["pending"]) or int(c["idle"]) < min_idle_ms:
                continue
            name = _str(c["name"])
            if self.client.eval(_DEL_IDLE_CONSUMER, 1, key, group, name) != -1:
                removed.append(name)
        return removed

    def pending(self, stream: str, group: str) -> int:
        """How many entries of ``stream`` are delivered to ``group`` but not acked."""
        try:
            return int(self.client.xpending(self.key(stream), group)["pending"])
        except redis.ResponseError:
            return 0

    # -- dead letter -----------------------------------------------------------------

    def dead_letter(
        self,
        stream: str,
        entry: Entry,
        reason: str,
        deliveries: int,
        *,
        group: str | None = None,
    ) -> str:
        """Move ``entry`` to ``corec_dead_letter`` with ``reason``; ack it in ``group`` if given.

        Both happen in one MULTI, so a crash never leaves a dead-lettered entry pending
        (it would be dead-lettered twice) nor an acked one without its dead letter.
        """
        pipe = self.client.pipeline(transaction=True)
        fields: dict[Any, Any] = self._dead_fields(stream, entry, reason, deliveries)
        pipe.xadd(self.key(DEAD_LETTER), fields)
        if group is not None:
            pipe.xack(self.key(stream), group, entry.id)
        dead_id = _str(pipe.execute()[0])
        self._alert_dead(stream, group, [(entry, reason, deliveries)])
        return dead_id

    def settle(
        self,
        stream: str,
        group: str,
        ack_ids: Sequence[str],
        dead: Sequence[tuple[Entry, str, int]] = (),
        *,
        alert: bool = True,
    ) -> None:
        """Dead-letter ``dead`` (entry, reason, deliveries), ack them and ``ack_ids``,
        atomically (one MULTI). Call only once the effect of ``ack_ids`` is durable.
        ``alert``: one warning on ``corec_alerts`` (unless the caller sends its own)."""
        if not dead:
            self.ack(stream, group, ack_ids)
            return
        pipe = self.client.pipeline(transaction=True)
        dl_key = self.key(DEAD_LETTER)
        for entry, reason, deliveries in dead:
            fields: dict[Any, Any] = self._dead_fields(stream, entry, reason, deliveries)
            pipe.xadd(dl_key, fields)
        ids = [*ack_ids, *(e.id for e, _, _ in dead)]
        pipe.xack(self.key(stream), group, *ids)
        pipe.execute()
        if alert:
            self._alert_dead(stream, group, dead)

    def alert_unsigned(
        self, stream: str, group: str, bad: Sequence[tuple[Entry, str, int]]
    ) -> None:
        """The one ``error`` alert (source ``stream.signature``) for entries without a
        valid signature that ``group`` dead-lettered: a consumer loop's or a block's."""
        self.alert("error", "stream.signature", stream,
                   f"{len(bad)} entries on {stream} without a valid signature were "
                   f"dead-lettered by {group} (first: {bad[0][0].id}, {bad[0][1]}); "
                   "someone who is not a CoreC producer writes to Redis")  # fmt: skip

    def _alert_dead(
        self, stream: str, group: str | None, dead: Sequence[tuple[Entry, str, int]]
    ) -> None:
        """One ``warning`` per stream and hour (source ``stream.dead_letter``): entries an
        operator must look at (``corec streams dead-letter``). Never raises: the dead
        letters are written; an alert lost to a Redis error is only logged."""
        entry, reason, _ = dead[0]
        by = f" by {group}" if group else ""
        try:
            self.alert("warning", "stream.dead_letter", stream,
                       f"{len(dead)} entries of {stream} dead-lettered{by} (first: "
                       f"{entry.id}, {reason[:300]}); see `corec streams dead-letter`")  # fmt: skip
        except redis.RedisError as exc:
            log.warning("could not alert on dead letters of %s: %r", stream, exc)

    def _dead_fields(
        self, stream: str, entry: Entry, reason: str, deliveries: int
    ) -> dict[bytes, bytes]:
        return {
            b"stream": stream.encode(),
            b"id": entry.id.encode(),
            b"reason": reason.encode("utf-8", "replace"),
            b"deliveries": b"%d" % deliveries,
            b"payload": entry.original_bytes(),
            b"instance_id": entry.fields.get(F_INSTANCE, b""),
            b"time": b"%d" % (time.time() * 1000),
        }

    # -- alerts ----------------------------------------------------------------------

    def alert(
        self,
        level: str,
        source: str,
        subject: str,
        message: str,
        extra: Mapping[str, Any] | None = None,
        ttl_s: int = ALERT_TTL_S,
    ) -> bool:
        """Publish one alert on ``corec_alerts`` unless (source, subject) alerted within
        ``ttl_s``; True if sent (``corec_tasks/alerts.py``: one alert per incident).

        The marker ``corec:alert:<source>:<subject>`` is taken before the publish: a crash
        in between loses one alert rather than repeating it on every retry. Only a marker
        this deployment sealed that expires holds an alert back (``streams/markers.py``).
        """
        name = f"corec:alert:{source}:{subject}"
        if not markers.take(self.settings, self.client, self.stream_key, name, ttl_s,
                            time.time()):  # fmt: skip
            return False
        payload = {"level": level, "source": source, "subject": subject, "message": message,
                   **(extra or {})}  # fmt: skip
        getattr(log, "error" if level in ("error", "critical") else "warning")(
            "[alert] %s %s: %s", source, subject, message)  # fmt: skip
        self.publish(ALERTS, payload)
        return True

    # -- inspection (CLI) ------------------------------------------------------------

    def dead_letters(self, count: int = 20) -> list[dict[str, Any]]:
        """The newest ``count`` dead letters, newest first, as plain dicts."""
        rows: Any = self.client.xrevrange(self.key(DEAD_LETTER), count=count)
        out = []
        for dead_id, f in rows:
            out.append(
                {
                    "dead_id": _str(dead_id),
                    "stream": _text(f.get(b"stream")),
                    "id": _text(f.get(b"id")),
                    "reason": _text(f.get(b"reason")),
                    "deliveries": _int(f.get(b"deliveries")),
                    "payload": _text(f.get(b"payload")),
                    "instance_id": _text(f.get(b"instance_id")),
                    "time": _int(f.get(b"time")),
                }
            )
        return out

    def tail(self, stream: str, count: int = 10) -> list[dict[str, Any]]:
        """The newest ``count`` entries of ``stream``, newest first, payload parsed."""
        rows: Any = self.client.xrevrange(self.key(stream), count=count)
        out = []
        for eid, f in rows:
            raw = f.get(F_DATA)
            payload: Any
            if raw is None:
                payload = {_text(k): _text(v) for k, v in f.items()}
            else:
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = _text(raw)
            out.append(
                {
                    "id": _str(eid),
                    "instance_id": _text(f.get(F_INSTANCE)),
                    "time": _int(f.get(F_TIME)),
                    "payload": payload,
                }
            )
        return out


# -- helpers -------------------------------------------------------------------------


def _json_default(value: object) -> object:
    # Money is Decimal and travels as a string (DESIGN.md); times as ISO 8601.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _fields_json(fields: Mapping[bytes, bytes]) -> bytes:
    return json.dumps(
        {_text(k): _text(v) for k, v in fields.items()}, separators=(",", ":")
    ).encode()


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def entry_from_record(stream: str, record: bytes) -> Entry:
    """The Entry of a ``read_wire`` record."""
    eid, i, t, d = record.split(b"\n", 3)
    return Entry(stream, eid.decode(), d, {F_DATA: d, F_INSTANCE: i, F_TIME: t})


def _entry(stream: str, eid: bytes, flat: list[bytes]) -> Entry:
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return Entry(stream, eid.decode(), fields.get(F_DATA, b""), fields)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id (``"<ms>-<seq>"`` sorts numerically, not as text)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _group_error(stream: str, group: str, exc: redis.ResponseError) -> StreamError:
    if "NOGROUP" in str(exc):
        return StreamError(
            f"stream {stream} has no consumer group {group!r} (call ensure_group first)"
        )
    return StreamError(f"{stream} / {group}: {exc}")
