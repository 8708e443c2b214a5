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
    description: str = "test calibrator"

    def compute_range(self, histogram, bits, symmetric):
        return -1.0, 1.0


class _PluginA:
    @quantplug.hookimpl
    def register_calibrators(self, register):
        register(_Thing("same-name"))


class _PluginB:
    @quantplug.hookimpl
    def register_calibrators(self, register):
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


def _all_plugins_env(site) -> dict[str, str]:
    env_all = {k: v for k, v in os.environ.items() if k != "QUANTPLUG_LOAD_PLUGINS"}
    return {**env_all, "PYTHONPATH": str(site)}


def test_broken_plugins_are_marked_and_healthy_ones_still_listed(installed_fixture_plugins):
    result = run_cli("plugins", env=_all_plugins_env(installed_fixture_plugins))
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("Error: ") for e in errors), result.stderr  # no traceback
    broken, misspelled, clash = (next(e for e in errors if f'"fixture_{n}"' in e)
                                 for n in ("broken", "misspelled", "clash"))
    assert 'quantplug plugin "fixture_broken" from package quantplug-fixture-broken' in broken
    assert "QUANTPLUG_LOAD_PLUGINS" in broken
    assert ('quantplug plugin "fixture_misspelled" from package quantplug-fixture-misspelled 0.0.1 implements '
            'unknown hook "register_calibrator" (did you mean "register_calibrators"?)') in misspelled
    assert 'calibrator "max" is registered by both plugin "quantplug.builtin.calibrators" and plugin ' \
           '"fixture_clash"' in clash
    out = result.stdout
    assert "fixture_good  (quantplug-fixture-good 1.2.3)\n" in out and "calibrators: fixture-halfmax" in out
    assert "calibrators: max, mse, percentile" in out.replace("entropy, ", "")  # the built-ins stay
    for name in ("fixture_broken", "fixture_misspelled", "fixture_clash"):
        assert f"{name}  (" in out and out.split(f"{name}  (", 1)[1].split("\n", 1)[0].endswith("BROKEN")


def test_broken_plugins_in_json(installed_fixture_plugins):
    result = run_cli("plugins", "--json", env=_all_plugins_env(installed_fixture_plugins))
    assert result.returncode == 2
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["fixture_good"]["error"] is None and rows["fixture_good"]["calibrators"] == ["fixture-halfmax"]
    assert rows["fixture_clash"]["calibrators"] == [] and "both plugin" in rows["fixture_clash"]["error"]
    assert rows["fixture_misspelled"]["distribution"] == "quantplug-fixture-misspelled"
    assert "ImportError" in rows["fixture_broken"]["error"]


def test_a_command_that_needs_plugins_fails_on_a_misspelled_hook(installed_fixture_plugins):
    env = {"PYTHONPATH": str(installed_fixture_plugins), "QUANTPLUG_LOAD_PLUGINS": "fixture_misspelled"}
    result = run_cli("quantize", "--workload", "mnist-cnn", "--output", "/nonexistent/never", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and '"register_calibrator"' in result.stderr
    assert "quantplug-fixture-misspelled" in result.stderr


def test_misspelled_hook_is_an_error_naming_plugin_and_hook(pm):
    class Misspelled:
        @quantplug.hookimpl
        def register_method(self, register):
            raise AssertionError("never called")

    pm.register(Misspelled(), name="misspelled")
    with pytest.raises(PluginError, match='plugin "misspelled" .*unknown hook "register_method" '
                                          r'\(did you mean "register_methods"\?\)'):
        build_registry(pm)


def test_tolerant_manager_records_and_drops_a_clashing_plugin(monkeypatch):
    monkeypatch.delenv("QUANTPLUG_LOAD_PLUGINS", raising=False)
    pm = get_plugin_manager(load_entrypoints=False, strict=False)
    pm.register(_PluginA(), name="plugin-a")
    pm.register(_PluginB(), name="plugin-b")
    registry = build_registry(pm)
    assert registry.plugin_of("calibrators", "same-name") == "plugin-a"
    (failure,) = pm.failures
    assert failure.name == "plugin-b" and "plugin-a" in failure.message


def test_registration_checks_the_contract_naming_plugin_and_member(pm):
    class NoApply:
        name = "half-a-method"
        description = "has no apply"

    class Registers:
        @quantplug.hookimpl
        def register_methods(self, register):
            register(NoApply())

    pm.register(Registers(), name="incomplete")
    with pytest.raises(PluginError, match='plugin "incomplete" registered method "half-a-method" without apply'):
        build_registry(pm)


def test_optional_members_read_as_their_declared_defaults(pm):
    from quantplug.registry import CONTRACTS, Method

    class Minimal:
        name = "minimal"
        description = "only the required members"

        def apply(self, model, recipe, context):
            return model

    class Registers:
        @quantplug.hookimpl
        def register_methods(self, register):
            register(Minimal())

    pm.register(Registers(), name="minimal")
    method = build_registry(pm).method("minimal")
    defaults = CONTRACTS["methods"].optional
    assert (method.needs_training_data, method.needs_labels, method.needs_calibration, method.prepare) == (
        defaults["needs_training_data"], defaults["needs_labels"], defaults["needs_calibration"], None)
    assert isinstance(method, Method) and method.apply("m", None, None) == "m"
    with pytest.raises(AttributeError):
        method.not_a_member  # noqa: B018


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


# Modules a plugin distribution may import from, with the names it may take from each (their __all__).
PUBLIC_MODULES = ("quantplug", "quantplug.errors", "quantplug.registry", "quantplug.export")


def _private_quantplug_imports(path) -> list[str]:
    import ast
    import importlib

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "quantplug" and alias.name not in PUBLIC_MODULES:
                    found.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "quantplug":
                continue
            if node.module not in PUBLIC_MODULES:
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
                continue
            public = set(importlib.import_module(node.module).__all__)
            found += [f"{path}:{node.lineno}: from {node.module} import {a.name} (not in its __all__)"
                      for a in node.names if a.name not in public]
    return found


def test_plugin_distributions_import_only_public_quantplug_names():
    from .conftest import ROOT

    dists = [d for d in sorted((ROOT / "plugins").iterdir()) if (d / "pyproject.toml").is_file()]
    assert dists, "no plugin distributions under plugins/"
    sources = [p for d in dists for p in d.rglob("*.py")
               if not {"tests", "build"} & set(p.relative_to(d).parts) and ".egg-info" not in str(p)]
    assert any("quantplug_lsq" in str(p) for p in sources)
    private = [hit for p in sources for hit in _private_quantplug_imports(p)]
    assert not private, "plugin distributions import private quantplug modules:\n" + "\n".join(private)


def test_the_private_import_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from quantplug.quant.train import finetune\nimport quantplug.quant.prepare\n"
                   "from quantplug import hookimpl, _LAZY\nfrom quantplug.errors import ConfigError\n")
    assert [h.split(": ", 1)[1] for h in _private_quantplug_imports(bad)] == [
        "from quantplug.quant.train import ...", "import quantplug.quant.prepare",
        "from quantplug import _LAZY (not in its __all__)"]
