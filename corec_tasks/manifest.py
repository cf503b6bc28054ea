"""A plugin's manifest: ``plugin.json`` read into one typed model.

Everything a plugin brings to the framework is declared here, so the nucleus wires
the enabled plugins without naming any of them (DESIGN.md, "The framework never names
a plugin"). References to code are import strings, ``"module"`` or ``"module:attr"``,
resolved only when the plugin is enabled. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from corec_tasks.errors import ConfigurationError

MANIFEST = "plugin.json"

#: ``"module"`` or ``"module:attr"`` (``attr`` may be dotted).
_REF = r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$"
Ref = Annotated[str, Field(pattern=_REF, max_length=200)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.:-]*$", max_length=128)]
#: A plugin's name, as in plugin.json and the config's ``plugins``.
PluginName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
#: A task name or a glob of them (``"capital_pool.*"``).
TaskGlob = Annotated[str, Field(pattern=r"^[A-Za-z_*][\w.:*-]*$", max_length=128)]


def _listify(value: object) -> object:
    """A single string where a list is expected is a one-item list (older manifests)."""
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BeatEntry(_Strict):
    """A periodic job the plugin adds to beat's schedule.

    ``every`` is seconds, the name of a framework setting (``"env.persist_every_s"``)
    or a ``"module:callable"`` taking the Settings and returning seconds (a plugin's
    own option, say). ``expires`` likewise; unset, it is ``max(10, every)`` seconds,
    so a stopped cluster does not come back to a backlog of stale runs.
    """

    name: Name
    task: Name
    every: float | str
    expires: float | str | None = None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class Channels(_Strict):
    """The streams a plugin publishes and consumes (unprefixed names)."""

    publishes: list[Name] = []
    consumes: list[Name] = []
    #: Streams whose entries this plugin accepts only signed with the deployment's stream
    #: key (corec_tasks/streams/signing.py); every CoreC publisher then signs them.
    signed: list[Name] = []


class Consumer(_Strict):
    """A stream consumer: ``handler`` (``"module:callable"``) gets each entry of
    ``stream`` read by consumer group ``group``; beat drives it every ``every_s``.

    ``loop``: ``handler`` is instead a factory ``fn(settings)`` returning a handler of
    the consumer loop itself (``corec_tasks.streams.handler.Handler``: batches, its own
    readiness and signature checks, per-entry verdicts); its ``group`` must be ``group``.
    """

    stream: Name
    group: Name
    handler: Ref
    #: Seconds, or a framework setting's name as for beat entries (``"env.persist_every_s"``).
    every_s: float | str = 5.0
    loop: bool = False


class KeySpec(_Strict):
    """A deployment key the plugin needs: ``env`` (e.g. ``COREC_GRANT_KEY``), else the
    key file ``file`` in the data folder. ``corec keys init`` makes the file once;
    ``corec keys show-paths`` says where it is and which processes need it."""

    env: str = Field(pattern=r"^COREC_[A-Z0-9_]+$", max_length=64)
    file: str = Field(pattern=r"^[a-z0-9_]+\.key$", max_length=64)
    purpose: str = Field(max_length=300)
    #: The processes that load it: worker, beat, api, cli, producer.
    needed_by: list[Name] = []


class Demo(_Strict):
    """The plugin's part of ``corec demo`` (each ``"module:callable"``): ``config(settings,
    out_dir) -> Path`` writes the demo's copy of the config; ``events(n, rng) -> (entries,
    malformed)`` gives at most ``n`` ``(stream, payload)`` entries for its persisted
    streams and a few its schemas refuse, which the demo publishes, lands and shows
    dead-lettered; ``step(settings, timeout, console)`` runs on the demo's worker and
    beat; ``report(settings, cycles, timeout, run, console) -> (start, rows)`` runs the
    cycles the report's NAV table and chart show."""

    config: Ref | None = None
    events: Ref | None = None
    step: Ref | None = None
    report: Ref | None = None


class Manifest(_Strict):
    """The whole ``plugin.json``."""

    name: PluginName
    version: str = Field("0.0.0", max_length=32)
    description: str = Field("", max_length=1000)
    #: The file the nucleus loads by path (``register_processors(registry)`` lives there).
    entry: str = Field("main.py", max_length=200)
    #: Celery task modules, imported by workers (Celery ``include``).
    tasks: Annotated[list[Ref], BeforeValidator(_listify)] = []
    #: Task routes: a task name or glob -> a queue.
    routes: dict[TaskGlob, Name] = {}
    #: click groups added to ``corec`` (``"module:group"``).
    cli: Annotated[list[Ref], BeforeValidator(_listify)] = []
    beat: list[BeatEntry] = []
    channels: Channels = Channels()
    #: Payload models of the streams this plugin owns: stream -> ``"module:Model"``.
    schemas: dict[Name, Ref] = {}
    #: Streams the persister lands in ``eventos`` besides the framework's.
    persisted: list[Name] = []
    consumers: list[Consumer] = []
    #: The Alembic version folder of the plugin's tables (a branch of its own whose
    #: first revision depends on the framework's), relative to the plugin's folder.
    migrations: str | None = Field(None, max_length=200)
    #: The SQLAlchemy ``MetaData`` of those tables (``"module:attr"``), so Alembic's
    #: autogenerate compares them rather than proposing to drop them.
    metadata: Ref | None = None
    #: Processor names the plugin registers, and the block ids it ships (for listing).
    processors: list[Name] = []
    blocks: list[Name] = []
    #: ``corec_commands`` handlers: command name -> ``"module:callable"``.
    commands: dict[Name, Ref] = {}
    #: A pydantic model of the plugin's own config file (``config_path``).
    config_model: Ref | None = None
    demo: Demo | None = None
    #: Plugins this one imports or whose tables it uses; each must be enabled with it.
    requires: list[PluginName] = []
    #: Deployment keys this plugin's code loads (``corec keys``).
    keys: list[KeySpec] = []


def read_manifest(folder: Path) -> Manifest:
    """``folder/plugin.json`` as a Manifest; a ConfigurationError names the bad key."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError([("(file)", f"cannot read: {exc}")], str(path)) from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(map(str, e["loc"])) or "(root)", e["msg"]) for e in exc.errors()]
        raise ConfigurationError(problems, str(path)) from None
