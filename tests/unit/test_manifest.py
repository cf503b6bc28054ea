"""Every shipped plugin.json is a valid manifest whose every import string resolves and
which declares the plugins it imports (``requires``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import click
import pytest
from pydantic import ValidationError

from corec_tasks.discovery import enabled, resolve
from corec_tasks.errors import ConfigurationError
from corec_tasks.manifest import Manifest, read_manifest
from corec_tasks.settings import load_settings

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


def _imported_plugins(folder: Path) -> set[str]:
    """The other plugins whose modules ``folder``'s code imports (``plugins.trading`` is
    the shared library package, not a plugin)."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if len(parts) > 1 and parts[0] == "plugins":
                    found.add(parts[1])
    return found - {folder.name, "trading"}


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_a_plugin_declares_every_plugin_it_imports(folder: Path) -> None:
    manifest = read_manifest(folder)
    assert _imported_plugins(folder) <= set(manifest.requires)
    assert set(manifest.requires) <= {f.name for f in FOLDERS} - {folder.name}


def test_requires_holds_plugin_names() -> None:
    assert Manifest.model_validate({"name": "x", "requires": ["aaa"]}).requires == ["aaa"]
    with pytest.raises(ValidationError):
        Manifest.model_validate({"name": "x", "requires": ["plugins.aaa"]})
    with pytest.raises(ValidationError):
        Manifest.model_validate({"name": "x", "requires": "aaa"})


def test_an_enabled_plugin_whose_requirement_is_disabled_is_named(tmp_path: Path) -> None:
    """The key is the entry's place in ``plugins``; the message names what is missing."""
    config = json.loads((ROOT / "tests/data/small_config.json").read_text())
    config["plugins"] = [{"name": "aaa"}, {"name": "capital_pool", "enabled": False},
                         {"name": "strategy"}, {"name": "core"}]  # fmt: skip
    path = tmp_path / "corec_config.json"
    path.write_text(json.dumps(config))
    settings = load_settings(path)
    with pytest.raises(ConfigurationError) as caught:
        enabled(settings)
    assert caught.value.problems == [
        ("plugins[2].requires", "strategy requires capital_pool, which is not enabled"),
        ("plugins[3].requires", "core requires capital_pool, which is not enabled"),
    ]  # fmt: skip
    config["plugins"][1]["enabled"] = True
    path.write_text(json.dumps(config))
    assert [s.name for s in enabled(load_settings(path))] == ["aaa", "capital_pool", "strategy",
                                                               "core"]  # fmt: skip
