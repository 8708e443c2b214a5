from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

import quantplug
from quantplug.errors import DuplicateNameError, PluginError, UnknownNameError
from quantplug.plugins import DEFAULT_PLUGINS, get_plugin_manager
from quantplug.registry import KINDS, build_registry

from .conftest import run_cli


@dataclass
class _Thing:
    name: str
    description: str = "test thing"


class _PluginA:
    @quantplug.hookimpl
    def register_workloads(self, register):
        register(_Thing("same-name"))


class _PluginB:
    @quantplug.hookimpl
    def register_workloads(self, register):
        register(_Thing("same-name"))


def test_fresh_manager_each_call(pm):
    other = get_plugin_manager(load_entrypoints=False)
    assert other is not pm
    assert [pm.get_name(p) for p in pm.get_plugins()] != [] and set(DEFAULT_PLUGINS) <= set(pm.plugin_info)


def test_builtins_register_through_hooks(pm):
    for name in DEFAULT_PLUGINS:
        plugin = pm.get_plugin(name)
        hooks = {h.name for h in pm.get_hookcallers(plugin)}
        assert any(h.startswith("register_") for h in hooks), name
    registry = build_registry(pm)
    assert set(registry.names("backends")) >= {"onnxruntime", "tensorrt"}
    assert registry.plugin_of("backends", "onnxruntime") == "quantplug.builtin.backends"


def test_duplicate_name_names_both_plugins(pm):
    pm.register(_PluginA(), name="plugin-a")
    pm.register(_PluginB(), name="plugin-b")
    with pytest.raises(DuplicateNameError) as err:
        build_registry(pm)
    message = str(err.value)
    assert "plugin-a" in message and "plugin-b" in message and '"same-name"' in message


def test_unknown_name_lists_valid_ones(pm):
    registry = build_registry(pm)
    with pytest.raises(UnknownNameError) as err:
        registry.backend("tensorflow-lite")
    assert "onnxruntime" in str(err.value) and "tensorrt" in str(err.value)
    assert "quantplug plugins" in str(err.value)


def test_object_without_name_is_a_plugin_error(pm):
    class Nameless:
        @quantplug.hookimpl
        def register_methods(self, register):
            register(object())

    pm.register(Nameless(), name="nameless")
    with pytest.raises(PluginError, match='plugin "nameless"'):
        build_registry(pm)


def test_plugin_crashing_in_hook_is_named(pm):
    class Crashing:
        @quantplug.hookimpl
        def register_calibrators(self, register):
            raise RuntimeError("boom")

    pm.register(Crashing(), name="crashing")
    with pytest.raises(PluginError, match='plugin "crashing" failed in register_calibrators: RuntimeError: boom'):
        build_registry(pm)


def test_external_plugin_appears_without_change(installed_fixture_plugins):
    env = {"PYTHONPATH": str(installed_fixture_plugins), "QUANTPLUG_LOAD_PLUGINS": "fixture_good"}
    result = run_cli("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    good = rows["fixture_good"]
    assert good["distribution"] == "quantplug-fixture-good" and good["version"] == "1.2.3"
    assert good["builtin"] is False
    assert good["hooks"] == ["register_calibrators"]
    assert good["calibrators"] == ["fixture-halfmax"]
    assert set(DEFAULT_PLUGINS) <= set(rows)
    assert rows["quantplug.builtin.backends"]["backends"] == ["onnxruntime", "tensorrt"]


def test_broken_plugin_is_reported_by_name_and_package(installed_fixture_plugins):
    env = {"PYTHONPATH": str(installed_fixture_plugins)}
    env_all = {k: v for k, v in os.environ.items() if k != "QUANTPLUG_LOAD_PLUGINS"}
    result = run_cli("plugins", env={**env_all, **env})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert 'quantplug plugin "fixture_broken" from package quantplug-fixture-broken' in lines[0]
    assert "QUANTPLUG_LOAD_PLUGINS" in lines[0]


def test_disabled_plugins(installed_fixture_plugins):
    env = {"PYTHONPATH": str(installed_fixture_plugins), "QUANTPLUG_LOAD_PLUGINS": ""}
    result = run_cli("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    names = {row["name"] for row in json.loads(result.stdout)}
    assert "fixture_good" not in names and "fixture_broken" not in names


def test_selecting_an_unknown_plugin_is_an_error(installed_fixture_plugins):
    env = {"PYTHONPATH": str(installed_fixture_plugins), "QUANTPLUG_LOAD_PLUGINS": "nope"}
    result = run_cli("plugins", env=env)
    assert result.returncode == 2
    assert "nope" in result.stderr and "fixture_good" in result.stderr


def test_trace_switch_prints_hook_calls():
    result = run_cli("plugins", env={"QUANTPLUG_TRACE": "1", "QUANTPLUG_LOAD_PLUGINS": ""})
    assert result.returncode == 0, result.stderr
    assert "register_backends" in result.stderr


def test_every_kind_has_a_register_hook(pm):
    for kind in KINDS:
        assert hasattr(pm.hook, f"register_{kind}")
