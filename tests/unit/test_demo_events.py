"""The demo's streams section: each plugin's ``demo.events`` gives entries its schemas
accept on streams it persists, and bad ones they refuse; the framework fills the rest
with ``corec_alerts`` and names no plugin stream."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from corec_tasks.demo import MALFORMED, _entries
from corec_tasks.discovery import resolve
from corec_tasks.manifest import Manifest, read_manifest
from corec_tasks.streams.schemas import PayloadError, check_payload

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [read_manifest(p.parent) for p in sorted((ROOT / "plugins").glob("*/plugin.json"))]
SCHEMAS = {s: resolve(ref) for m in MANIFESTS for s, ref in m.schemas.items()}
WITH_EVENTS = [m for m in MANIFESTS if m.demo and m.demo.events]


def _raw(payload: dict[str, object]) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize("manifest", WITH_EVENTS, ids=[m.name for m in WITH_EVENTS])
def test_a_plugins_demo_events_are_its_own_and_valid(manifest: Manifest) -> None:
    assert manifest.demo is not None and manifest.demo.events
    entries, malformed = resolve(manifest.demo.events)(400, random.Random(1))
    assert 0 < len(entries) <= 400 and malformed
    for stream, payload in entries:
        assert stream in manifest.persisted
        check_payload(stream, _raw(payload), SCHEMAS[stream])
    for stream, payload in malformed:
        with pytest.raises(PayloadError):
            check_payload(stream, _raw(payload), SCHEMAS[stream])


def test_the_framework_fills_up_to_n_with_its_own_alerts() -> None:
    demos = [(m.name, m.demo) for m in WITH_EVENTS if m.demo]
    entries, malformed = _entries(demos, 1000, 7)
    assert len(entries) == 1000
    streams = {s for s, _ in entries}
    assert "corec_alerts" in streams and len(streams) > 1
    assert malformed[: len(MALFORMED)] == MALFORMED and len(malformed) > len(MALFORMED)
    alone, bad = _entries([], 50, 7)
    assert {s for s, _ in alone} == {"corec_alerts"} and len(alone) == 50 and bad == MALFORMED
    with pytest.raises(PayloadError):
        check_payload(*MALFORMED[0][:1], _raw(MALFORMED[0][1]))
    # the framework's demo module names no plugin stream
    source = (ROOT / "corec_tasks" / "demo.py").read_text()
    for stream in SCHEMAS:
        assert f'"{stream}"' not in source
