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


_RUN_METHOD = """
import json, torch, quantplug
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(),
                      nn.Linear(16, 3)).eval()
x = torch.randn(64, 1, 8, 8)
y = model(x).argmax(1)
calib = [(x[i:i + 16],) for i in range(0, 64, 16)]
train = [((x[i:i + 16],), y[i:i + 16]) for i in range(0, 64, 16)]
recipe = quantplug.QuantRecipe(method="tail-qat", calib_batches=4, qat_epochs=2, extra={"tail_layers": 1})
q = quantplug.quantize(model, recipe, calib, train, progress=False)
first = [m for m in q.modules() if hasattr(m, "weight_quant")][0]
last = [m for m in q.modules() if hasattr(m, "weight_quant")][-1]
print(json.dumps({"log": q.quantplug_log["tail_qat"], "train": sorted(q.quantplug_log["train_loss"]),
                  "first_same": bool(torch.equal(first.weight, model[0].weight)),
                  "last_same": bool(torch.equal(last.weight, model[5].weight)),
                  "modes": sorted({a.mode for a in quantplug.QuantContext.activation_quantizers(q)})}))
try:
    quantplug.quantize(model, recipe.replace(extra={"tail_layers": 0}), calib, train, progress=False)
except quantplug.ConfigError as e:
    print(e)
"""


def test_documented_method_plugin_installs_and_runs(tmp_path):
    doc = PLUGINS_DOC.read_text()
    src = tmp_path / "quantplug-tail-qat"
    src.mkdir()
    (src / "pyproject.toml").write_text(_code_block(doc, "`pyproject.toml` (method):", "toml"))
    (src / "quantplug_tail_qat.py").write_text(_code_block(doc, "`quantplug_tail_qat.py`:", "python"))
    site = tmp_path / "site"
    pip_install_target(src, site)
    env = {"PYTHONPATH": str(site), "QUANTPLUG_LOAD_PLUGINS": "tail_qat"}

    result = run_cli("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["tail_qat"]["methods"] == ["tail-qat"] and rows["tail_qat"]["distribution"] == "quantplug-tail-qat"

    import os
    import subprocess

    out = subprocess.run([sys.executable, "-c", _RUN_METHOD], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    seen = json.loads(lines[0])
    assert seen["log"]["trained_layers"] == ["5"] and seen["log"]["activation_quantizers"] >= 3
    assert seen["train"] == ["tail-qat"] and seen["modes"] == ["quant"]
    assert seen["first_same"] and not seen["last_same"]  # only the tail was fine-tuned
    assert lines[1] == "recipe extra tail_layers=0 must be a positive integer"
