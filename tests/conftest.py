from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def pm(monkeypatch: pytest.MonkeyPatch):
    """A fresh plugin manager with built-ins only (installed third-party plugins excluded)."""
    from quantplug.plugins import get_plugin_manager

    monkeypatch.delenv("QUANTPLUG_LOAD_PLUGINS", raising=False)
    return get_plugin_manager(load_entrypoints=False)


def pip_install_target(source: Path, target: Path) -> None:
    """Really install a plugin distribution (with its entry points) into a folder for PYTHONPATH."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True,
    )


@pytest.fixture(scope="session")
def installed_fixture_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good fixture plugin and the broken ones (import error, misspelled hook, name clash),
    pip-installed into one folder (not into the venv)."""
    target = tmp_path_factory.mktemp("site")
    for name in ("quantplug_fixture_good", "quantplug_fixture_broken", "quantplug_fixture_misspelled",
                 "quantplug_fixture_clash"):
        pip_install_target(FIXTURE_PLUGINS / name, target)
    return target


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `quantplug` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "quantplug", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)
