"""The deployment's keys: which exist, where each is read from, and making them once.

The framework's own keys (task messages, signed streams) and every enabled plugin's
(``keys`` in its plugin.json) are listed by :func:`deployment_keys`; ``corec keys
init`` makes the missing key files (:func:`init`), ``corec keys show-paths`` shows each
one's variable, file and the processes that need it (:func:`locate`). Processes only
read keys (corec_tasks/keyfile.py): a node without them refuses to start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corec_tasks.discovery import enabled
from corec_tasks.keyfile import create_key_file
from corec_tasks.manifest import KeySpec
from corec_tasks.settings import Settings

#: The framework's keys; plugins add theirs in their manifests.
FRAMEWORK_KEYS = (
    KeySpec(env="COREC_TASK_KEY", file="task.key",
            purpose="signs every Celery task message; a worker runs only messages signed "
                    "with it", needed_by=["worker", "beat", "api", "cli", "flower"]),
    KeySpec(env="COREC_STREAM_KEY", file="stream.key",
            purpose="signs the entries of the signed streams (trading results, capital "
                    "data, commands and their answers)",
            needed_by=["worker", "beat", "api", "cli", "producer"]),
)  # fmt: skip


@dataclass(frozen=True)
class KeyPlace:
    """Where one key is read from on this node, and whether it is there."""

    spec: KeySpec
    owner: str  # "corec" or the plugin declaring it
    path: Path
    from_env: bool
    present: bool


def deployment_keys(settings: Settings) -> list[tuple[str, KeySpec]]:
    """``(owner, spec)`` of every key the framework and the enabled plugins need."""
    out = [("corec", spec) for spec in FRAMEWORK_KEYS]
    seen = {spec.env for spec in FRAMEWORK_KEYS}
    for plugin in enabled(settings):
        for spec in plugin.manifest.keys:
            if spec.env not in seen:
                seen.add(spec.env)
                out.append((plugin.name, spec))
    return out


def locate(settings: Settings, environ: Mapping[str, str] | None = None) -> list[KeyPlace]:
    """Each key's place on this node: its variable if set, else its file."""
    env = os.environ if environ is None else environ
    out = []
    for owner, spec in deployment_keys(settings):
        path = Path(settings.data_dir) / spec.file
        from_env = bool(env.get(spec.env))
        out.append(KeyPlace(spec, owner, path, from_env, from_env or path.exists()))
    return out


def all_shipped(folders: list[Path]) -> list[KeySpec]:
    """Every key the framework and the plugins in ``folders`` declare, enabled or not
    (a test's data folder, which several configs share)."""
    from corec_tasks.manifest import read_manifest

    specs = list(FRAMEWORK_KEYS)
    for folder in folders:
        specs += read_manifest(folder).keys
    return specs


def init(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> list[tuple[KeyPlace, str]]:
    """Make every missing key file (mode 0600) of a key whose variable is unset;
    ``(place, "made" | "kept" | "from the environment")`` for each key."""
    out = []
    for place in locate(settings, environ):
        if place.from_env:
            out.append((place, "from the environment"))
        else:
            made = create_key_file(place.path)
            out.append((place, "made" if made else "kept"))
    return out
