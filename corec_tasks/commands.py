"""Commands and responses: ``corec_commands`` routed to handlers, answered on ``corec_responses``.

A command is ``{"id", "command", "target", "args"}``; the dispatcher answers
``{"id", "target", "command", "response"}`` or ``{"id", ..., "error"}``. An unknown
target or command, bad args or a handler that raises get an ``error`` answer, never
silence. A payload that is not a command at all (no usable ``id``) cannot be
answered: it goes to the dead letter with its reason.

**Authority.** Both streams are signed with the stream key (``COREC_STREAM_KEY``,
``corec_tasks/streams/signing.py``): ``send`` (so ``corec commands send``) and every
CoreC producer sign what they publish. The dispatcher runs only a command whose
signature is valid and whose signed send time ``t`` is within :data:`SENT_WITHIN_S`
(plus ``COREC_PUBLISH_RETRY_S``) of the time Redis added it (the entry id), so a
captured command copied back later is refused too. A refused command does nothing: it
is dead-lettered with its reason, one ``error`` alert goes out (source
``stream.signature``) and it is answered with an ``error`` and ``"refused": <its entry
id>``, outside the answer-once marker, so a forged copy of a real command's id neither
runs nor keeps the real one from its answer. Readers (:func:`wait_response`, so
``corec commands send --wait``) believe only signed answers: a forged one is ignored
and alerted, and a refusal of another entry than the one they sent is not theirs.

**Once per id.** The answer is published by one script that first sets the marker
``corec:cmd:answered:<tag>`` (SET NX) and appends the response only if it was new, so
a redelivered or duplicated command is answered once. ``<tag>`` is an HMAC of the id
under the stream key (``signing.tag``): no one without the key can set the marker of
an id first and so hide the real answer behind a forged one. A handler may run twice
only if its worker dies between running it and answering (handlers should be
idempotent; ``blocks.redirect`` is an operator's action and says what it moved).

**Handlers.** The core registers target ``core``: ``status``, ``blocks.list``,
``blocks.redirect``. A plugin registers its own under its name: a function
``register_commands(registry)`` in its ``main.py`` (as ``register_processors``) gets a
registry scoped to the plugin, ``registry.register("balance", fn)``. A handler is
``fn(args: dict, ctx: CommandContext) -> JSON-able``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from corec_tasks.blocks.cycle import cycle_health
from corec_tasks.blocks.store import BlockStore
from corec_tasks.discovery import resolve
from corec_tasks.errors import CorecError, PluginError
from corec_tasks.modules.sync import load_of, redirect
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import F_TIME, Entry, StreamBus
from corec_tasks.streams.consumer import ConsumerLoop
from corec_tasks.streams.handler import Dead, Done, EntryHandler, Verdict
from corec_tasks.streams.names import COMMANDS, RESPONSES
from corec_tasks.streams.schemas import PayloadError, validate_payload
from corec_tasks.streams.signing import check, sign, stream_key, tag

log = logging.getLogger(__name__)

#: The consumer group of the dispatcher on ``corec_commands``.
DISPATCH_GROUP = "corec_dispatcher"
#: The target of the core's own commands.
CORE = "core"
#: How long an answered id is remembered (a command id reused later is answered again).
ANSWERED_TTL_S = 7 * 86400
#: Longest error text in a response.
ERROR_MAX = 2000
#: A command's signed send time and the time Redis added it may differ by this much
#: (plus ``COREC_PUBLISH_RETRY_S``, how long a publish may wait for Redis): clocks
#: apart, and no more, so a captured command cannot be sent again later.
SENT_WITHIN_S = 300

Handler = Callable[[dict[str, Any], "CommandContext"], Any]

# Answer once: the marker and the (signed) response in one step, or nothing.
_ANSWER_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[2], '*', 'd', ARGV[3], 'i', ARGV[4], 't', ARGV[5],
                    's', ARGV[6])
end
return false
"""


class CommandError(CorecError):
    """A command cannot be run: unknown target or command, or bad args."""


@dataclass
class CommandContext:
    """What a handler may use: the settings, the block store and its Redis client."""

    settings: Settings
    store: BlockStore


class CommandRegistry:
    """Handlers by (target, command); a miss raises :class:`CommandError` naming the known."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}

    def register(self, target: str, command: str, fn: Handler) -> Handler:
        """Register ``fn`` for ``command`` of ``target``; a taken pair raises."""
        if (target, command) in self._handlers:
            raise CommandError(f"command {command!r} of {target!r} is already registered")
        self._handlers[(target, command)] = fn
        return fn

    def get(self, target: str, command: str) -> Handler:
        """The handler of ``command`` on ``target``."""
        try:
            return self._handlers[(target, command)]
        except KeyError:
            pass
        known = sorted(c for t, c in self._handlers if t == target)
        if not known:
            targets = ", ".join(self.targets()) or "(none)"
            raise CommandError(f"unknown target {target!r}; known targets: {targets}")
        raise CommandError(f"unknown command {command!r} for {target!r}; known: "
                           f"{', '.join(known)}")  # fmt: skip

    def targets(self) -> list[str]:
        """Targets with at least one command, sorted."""
        return sorted({t for t, _ in self._handlers})

    def scoped(self, target: str) -> ScopedCommands:
        """A view that registers under ``target`` only (what a plugin gets)."""
        return ScopedCommands(self, target)


@dataclass
class ScopedCommands:
    """A plugin's view of the registry: ``register(command, fn)`` under its own name."""

    registry: CommandRegistry
    target: str

    def register(self, command: str, fn: Handler) -> Handler:
        """Register ``fn`` as ``command`` of this plugin."""
        return self.registry.register(self.target, command, fn)


# -- core handlers -----------------------------------------------------------------------


def _status(args: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
    metas = ctx.store.metas()
    last = ctx.store.r.get(ctx.settings.key("corec:cycle:last"))
    return {"instance_id": ctx.settings.instance_id, "blocks": len(metas),
            "entities": sum(int(m["num_entidades"]) for m in metas),
            "last_cycle": int(last) if last else None,
            "cycles": cycle_health(ctx.settings, ctx.store.r)}  # fmt: skip


def _blocks_list(args: dict[str, Any], ctx: CommandContext) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for m in ctx.store.metas():
        spec = m["spec"]
        g = groups.setdefault(spec["group"], {"group": spec["group"], "blocks": 0, "entities": 0,
                                              "stream": spec.get("stream"), "fitness": [],
                                              "load": []})  # fmt: skip
        g["blocks"] += 1
        g["entities"] += int(m["num_entidades"])
        g["fitness"].append(float(m["fitness"]))
        g["load"].append(load_of(m))
    for g in groups.values():
        g["fitness"] = round(sum(g["fitness"]) / len(g["fitness"]), 4)
        g["load"] = round(sum(g["load"]) / len(g["load"]), 4)
    return list(groups.values())


class _RedirectArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    src: str = Field(min_length=1, max_length=200)
    dst: str = Field(min_length=1, max_length=200)
    count: StrictInt = Field(ge=1, le=10_000_000)


def _blocks_redirect(args: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
    try:
        a = _RedirectArgs.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}"
                             for e in exc.errors())  # fmt: skip
        raise CommandError(f"bad args: {problems}") from None
    return {"moved": redirect(ctx.store, a.src, a.dst, a.count), "src": a.src, "dst": a.dst}


def core_registry() -> CommandRegistry:
    """A registry holding the core's commands (target ``core``)."""
    registry = CommandRegistry()
    registry.register(CORE, "status", _status)
    registry.register(CORE, "blocks.list", _blocks_list)
    registry.register(CORE, "blocks.redirect", _blocks_redirect)
    return registry


def _manifest_handler(fn: Callable[[Settings, dict[str, Any]], Any]) -> Handler:
    """A manifest's ``fn(settings, args)`` as a registry handler."""
    return lambda args, ctx: fn(ctx.settings, args)


def add_plugin_commands(registry: CommandRegistry, plugins: Iterable[Any]) -> None:
    """Register each loaded plugin's commands under its name: those its manifest
    declares (``"commands": {"NAME": "module:fn"}``, ``fn(settings, args)``) and those
    its ``register_commands(registry)`` hook adds."""
    for plugin in plugins:
        manifest = getattr(plugin, "manifest", None)
        for command, ref in getattr(manifest, "commands", {}).items():
            registry.register(plugin.name, command,
                              _manifest_handler(resolve(ref, plugin.name)))  # fmt: skip
        hook = getattr(plugin.module, "register_commands", None)
        if hook is None:
            continue
        try:
            hook(registry.scoped(plugin.name))
        except Exception as exc:  # plugin code: one named error
            raise PluginError(plugin.name, f"register_commands failed: {exc!r}") from exc


# -- the dispatcher ----------------------------------------------------------------------


def answer(
    settings: Settings, client: redis.Redis, payload: dict[str, Any]
) -> str | None:
    """Publish ``payload`` on ``corec_responses`` unless its id was answered; the entry id."""
    return answer_many(settings, client, [payload])[0]


def answer_many(
    settings: Settings, client: redis.Redis, payloads: list[dict[str, Any]]
) -> list[str | None]:
    """:func:`answer` for each of ``payloads``, in one round trip (a pipeline of the
    answer-once script); each entry id, None where that id was answered before."""
    if not payloads:
        return []
    key = stream_key(settings)
    instance = settings.instance_id.encode()
    pipe = client.pipeline(transaction=False)
    now, ms = b"%d" % time.time(), b"%d" % (time.time() * 1000)
    for payload in payloads:
        data = json.dumps(payload, separators=(",", ":"), default=str).encode()
        pipe.eval(_ANSWER_ONCE, 2, answered_key(settings, key, str(payload["id"])),
                  settings.key(RESPONSES), now, ANSWERED_TTL_S, data, instance, ms,
                  sign(key, RESPONSES, instance, ms, data))  # fmt: skip
    rids: list[Any] = pipe.execute()
    return [None if r is None else (r.decode() if isinstance(r, bytes) else str(r))
            for r in rids]  # fmt: skip


def answered_key(settings: Settings, key: bytes, command_id: str) -> str:
    """The Redis key of the marker "``command_id`` was answered": named by an HMAC of
    the id, so only a holder of the stream ``key`` can set it."""
    return settings.key(f"corec:cmd:answered:{tag(key, 'corec:cmd:answered', command_id)}")


def refuse(bus: StreamBus, entry: Entry, why: str) -> str | None:
    """Answer (signed) a command that carries no authority: an ``error`` and
    ``refused`` (its entry id), never the answer-once marker; the entry id of the
    answer, or None if the entry has no usable id."""
    rid = _raw_id(entry.payload)
    if rid is None:
        return None
    error = f"refused, nothing done: {why}"[:ERROR_MAX]
    return bus.publish(RESPONSES, {"id": rid, "refused": entry.id, "error": error})


def stale(entry: Entry, window_s: float) -> str | None:
    """Why ``entry`` was not added when it was signed (a copy sent again), or None."""
    raw = entry.fields.get(F_TIME, b"")
    if not raw.isdigit():
        return "no send time (field t)"
    apart = abs(entry.millis - int(raw)) / 1000
    if apart > window_s:
        return (f"signed {apart:.0f} s apart from when Redis added it (more than "
                f"{window_s:g} s): a captured command sent again, or a clock off")  # fmt: skip
    return None


def handle(
    entry: Entry, registry: CommandRegistry, ctx: CommandContext
) -> dict[str, Any] | str:
    """The answer to one entry, or the reason it cannot be answered (no usable id)."""
    try:
        cmd = validate_payload(COMMANDS, entry.payload)
    except PayloadError as exc:
        raw_id = _raw_id(entry.payload)
        if raw_id is None:
            return exc.reason
        return {"id": raw_id, "error": f"invalid command: {exc.reason}"[:ERROR_MAX]}
    target = cmd.get("target") or CORE
    out: dict[str, Any] = {"id": cmd["id"], "target": target, "command": cmd["command"]}
    try:
        fn = registry.get(target, cmd["command"])
        out["response"] = fn(dict(cmd.get("args") or {}), ctx)
    except CorecError as exc:
        out["error"] = str(exc)[:ERROR_MAX]
    except Exception as exc:  # handler (maybe plugin) code: answered, never a crash
        log.warning("[commands] %s %s failed: %r", target, cmd["command"], exc)
        out["error"] = f"{type(exc).__name__}: {exc}"[:ERROR_MAX]
    return out


def _raw_id(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    ok = isinstance(rid, str) and 0 < len(rid) <= 200 and rid.isprintable()
    return rid if ok else None


class CommandDispatcher(EntryHandler):
    """``corec_commands`` on the one consumer loop: answer each signed command once on
    ``corec_responses``, then ack it; a payload with no usable id is dead-lettered, and
    so is a command without authority (unsigned, badly signed, or sent again), after
    its refusal is answered."""

    group = DISPATCH_GROUP
    signed = True  # the loop dead-letters and alerts the others, then calls refused()

    def __init__(self, settings: Settings, client: redis.Redis, registry: CommandRegistry) -> None:
        self.settings = settings
        self.client = client
        self.registry = registry
        self.ctx = CommandContext(settings, BlockStore(settings, client))
        self.bus = StreamBus(settings, client)
        self.window_s = SENT_WITHIN_S + settings.env.publish_retry_s

    def refused(self, bad: Sequence[tuple[Entry, str]]) -> None:
        for entry, why in bad:
            refuse(self.bus, entry, why)

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        why = stale(entry, self.window_s)
        if why is not None:
            self.bus.alert("error", "stream.signature", COMMANDS,
                           f"command {entry.id} on {COMMANDS} refused by {self.group}: {why}")
            refuse(self.bus, entry, why)
            return Dead(f"{self.group}: {why}")
        rid = _raw_id(entry.payload)
        if rid is not None and self.client.exists(
                answered_key(self.settings, self.bus.stream_key, rid)):  # fmt: skip
            return Done("duplicates")  # answered already: a redelivery or a reused id
        out = handle(entry, self.registry, self.ctx)
        if isinstance(out, str):
            return Dead(f"not a command: {out}")
        return Done("duplicates" if answer(self.settings, self.client, out) is None
                    else "answered")  # fmt: skip


def drain(
    settings: Settings,
    client: redis.Redis,
    registry: CommandRegistry,
    *,
    consumer: str | None = None,
    count: int = 100,
    max_batches: int = 10,
    claim_idle_ms: int | None = None,
) -> dict[str, int]:
    """Answer the pending commands (stale ones reclaimed first), each acked after its
    answer is published or it is dead-lettered."""
    bus = StreamBus(settings, client)
    loop = ConsumerLoop(bus, CommandDispatcher(settings, client, registry), consumer,
                        batch=count, claim_idle_ms=claim_idle_ms)  # fmt: skip
    s = loop.run(COMMANDS, max_batches)
    return {"answered": s.counts["answered"], "duplicates": s.counts["duplicates"],
            "dead_lettered": s.dead_lettered}  # fmt: skip


class Sent(NamedTuple):
    """A command sent: its id (answers name it) and its entry id on ``corec_commands``."""

    id: str
    entry: str


def send(settings: Settings, client: redis.Redis, target: str, command: str,
         args: dict[str, Any] | None = None, command_id: str | None = None) -> Sent:  # fmt: skip
    """Publish a command, signed with the stream key (the bus signs ``corec_commands``)."""
    cid = command_id or uuid.uuid4().hex
    payload: dict[str, Any] = {"id": cid, "command": command, "target": target}
    if args is not None:
        payload["args"] = args
    return Sent(cid, StreamBus(settings, client).publish(COMMANDS, payload))


def wait_response(
    settings: Settings,
    client: redis.Redis,
    command_id: str,
    *,
    entry: str | None = None,
    since: str = "0-0",
    timeout_s: float = 30.0,
) -> dict[str, Any] | None:
    """The signed response to ``command_id`` on ``corec_responses`` (read after
    ``since``), or None.

    An answer without a valid signature is ignored and alerted (``error``, source
    ``stream.signature``); a refusal of another entry than ``entry`` (the one sent, if
    given) answers a forged copy of the command, not it, and is skipped.
    """
    bus = StreamBus(settings, client)
    key = settings.key(RESPONSES)
    cursor = since
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        block = max(1, int(min(1.0, deadline - time.monotonic()) * 1000))
        resp: Any = client.xread({key: cursor}, count=100, block=block)
        items: Any = []
        if resp:
            items = next(iter(resp.values())) if isinstance(resp, dict) else resp[0][1]
        for eid, fields in items:
            cursor = eid.decode() if isinstance(eid, bytes) else str(eid)
            try:
                data = json.loads(fields.get(b"d", b"{}"))
            except ValueError:
                continue
            if not isinstance(data, dict) or data.get("id") != command_id:
                continue
            why = check(bus.stream_key, RESPONSES, fields)
            if why is not None:
                log.warning("ignored a forged answer to %s (%s): %s", command_id, cursor, why)
                bus.alert("error", "stream.signature", RESPONSES,
                          f"an answer to {command_id} on {RESPONSES} ({cursor}: {why}) was "
                          "ignored: someone who is not a CoreC producer writes to Redis")
                continue
            if "refused" in data and entry is not None and data["refused"] != entry:
                continue  # the refusal of a forged copy of this command
            return data
    return None


def last_response_id(settings: Settings, client: redis.Redis) -> str:
    """The newest entry id of ``corec_responses`` ("0-0" if empty): wait from there."""
    rows: Any = client.xrevrange(settings.key(RESPONSES), count=1)
    if not rows:
        return "0-0"
    eid = rows[0][0]
    return eid.decode() if isinstance(eid, bytes) else str(eid)


def registry_for(nucleus: Any) -> CommandRegistry:
    """The core's commands plus those of the nucleus's loaded plugins."""
    registry = core_registry()
    add_plugin_commands(registry, getattr(nucleus, "plugins", []))
    return registry
