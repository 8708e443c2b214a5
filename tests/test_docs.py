"""Docs are part of the code: every hook is documented, and the documented example plugin really works."""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

from quantplug import hookspecs

from .conftest import ROOT, pip_install_target, run_cli

PLUGINS_DOC = ROOT / "docs" / "plugins.md"


def _hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(f, f"{hookspecs.PROJECT_NAME}_spec")]


def test_every_hook_has_a_docstring_and_a_doc_section():
    doc = PLUGINS_DOC.read_text()
    names = _hook_names()
    assert len(names) >= 6
    for name in names:
        func = getattr(hookspecs, name)
        assert func.__doc__ and "Return" in func.__doc__, f"{name} docstring must say what to return"
        params = ", ".join(inspect.signature(func).parameters)
        assert f"### `{name}({params})`" in doc, f"docs/plugins.md lacks a section for {name}({params})"


def test_every_hook_is_exercised_by_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for name in _hook_names():
        if name.startswith("register_"):
            continue  # exercised by every registry build
        assert re.search(rf"def {name}\(", tests), f"no test implements hook {name}"


def _code_block(doc: str, after: str, lang: str) -> str:
    start = doc.index(after)
    match = re.search(rf"```{lang}\n(.*?)```", doc[start:], re.S)
    assert match, f"no {lang} block after {after!r}"
    return match.group(1)


def test_documented_example_plugin_installs_and_works(tmp_path):
    doc = PLUGINS_DOC.read_text()
    src = tmp_path / "quantplug-three-sigma"
    src.mkdir()
    (src / "pyproject.toml").write_text(_code_block(doc, "`pyproject.toml`:", "toml"))
    (src / "quantplug_three_sigma.py").write_text(_code_block(doc, "`quantplug_three_sigma.py`:", "python"))
    site = tmp_path / "site"
    pip_install_target(src, site)
    env = {"PYTHONPATH": str(site), "QUANTPLUG_LOAD_PLUGINS": "three_sigma"}

    result = run_cli("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["three_sigma"]["calibrators"] == ["three-sigma"]
    assert rows["three_sigma"]["distribution"] == "quantplug-three-sigma"

    # The calibrator computes a real range from a real histogram, through the registry.
    code = (
        "import torch, quantplug; from quantplug.quant.histogram import Histogram\n"
        "h = Histogram(2048); torch.manual_seed(0); h.update(torch.randn(100000))\n"
        "cal = quantplug.build_registry().calibrator('three-sigma')\n"
        "print(*cal.compute_range(h, 8, True)); print(*cal.compute_range(h, 8, False))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, **env}, check=True).stdout.split("\n")
    low, high = map(float, out[0].split())
    assert low == -high and 2.9 < high < 3.1  # 3 sigma of a standard normal
    alow, ahigh = map(float, out[1].split())
    assert -3.1 < alow < -2.9 and 2.9 < ahigh < 3.1


def test_readme_starts_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block
    assert Path(ROOT / "Makefile").read_text().count("demo:") == 1


def test_readme_lists_every_command_with_its_purpose():
    from quantplug.cli import build_cli

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"^\| `quantplug ([a-z-]+)` \|", table, re.M)
    assert listed == sorted(build_cli().commands), "README's command table differs from the CLI"
