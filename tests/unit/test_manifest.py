"""Every shipped plugin.json is a valid manifest whose every import string resolves."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from corec_tasks.discovery import resolve
from corec_tasks.errors import ConfigurationError
from corec_tasks.manifest import Manifest, read_manifest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p.parent for p in (ROOT / "plugins").glob("*/plugin.json"))


def _refs(m: Manifest) -> list[str]:
    refs = [*m.tasks, *m.cli, *m.schemas.values(), *m.commands.values()]
    refs += [c.handler for c in m.consumers]
    refs += [v for e in m.beat for v in (e.every, e.expires)
             if isinstance(v, str) and not v.startswith("env.")]  # fmt: skip
    if m.demo:
        refs += [r for r in (m.demo.config, m.demo.step, m.demo.report) if r]
    if m.config_model:
        refs.append(m.config_model)
    if m.metadata:
        refs.append(m.metadata)
    return refs


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_shipped_manifest_is_valid_and_resolves(folder: Path) -> None:
    manifest = read_manifest(folder)
    assert manifest.name == folder.name
    assert (folder / manifest.entry).is_file()
    for ref in _refs(manifest):
        assert resolve(ref, manifest.name) is not None
    for ref in manifest.cli:
        assert isinstance(resolve(ref), click.Command)
    if manifest.migrations:
        assert (folder / manifest.migrations).is_dir()


def test_a_typo_is_named(tmp_path: Path) -> None:
    (tmp_path / "plugin.json").write_text(
        '{"name": "x", "beat": [{"name": "b", "task": "x.t", "evry": 5}]}')
    with pytest.raises(ConfigurationError) as caught:
        read_manifest(tmp_path)
    keys = [k for k, _ in caught.value.problems]
    assert "beat.0.evry" in keys and "beat.0.every" in keys


def test_a_string_is_a_one_item_list() -> None:
    assert Manifest.model_validate({"name": "x", "tasks": "x.tasks"}).tasks == ["x.tasks"]
