from __future__ import annotations

import pytest

import quantplug
from quantplug.stages import stage


class _Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict]] = []

    @quantplug.hookimpl
    def on_stage(self, stage, seconds, info):
        self.calls.append((stage, seconds, info))


def test_on_stage_is_called_with_time_and_info(pm):
    observer = _Observer()
    pm.register(observer, name="observer")
    with stage(pm, "export", target="onnxruntime") as info:
        info["path"] = "model.onnx"
    (name, seconds, seen), = observer.calls
    assert name == "export" and seconds >= 0
    assert seen["target"] == "onnxruntime" and seen["path"] == "model.onnx"
    assert info["seconds"] == seconds


def test_failed_stage_is_not_reported(pm):
    observer = _Observer()
    pm.register(observer, name="observer")
    with pytest.raises(RuntimeError), stage(pm, "method"):
        raise RuntimeError("boom")
    assert observer.calls == []


def test_an_unknown_stage_is_refused(pm):
    from quantplug.stages import emit

    with pytest.raises(ValueError, match="unknown stage 'calibrate'"):
        emit(pm, "calibrate", 0.0, {})
    with pytest.raises(ValueError, match="unknown stage"), stage(pm, "repo-add"):
        pass


def test_the_stage_list_is_documented_once_in_order():
    import re

    from quantplug import hookspecs
    from quantplug.stages import STAGES

    from .conftest import ROOT

    doc = (ROOT / "docs" / "plugins.md").read_text().split("### `on_stage(", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"`([a-z]+)`", doc.split("STAGES`):", 1)[1].split(".", 1)[0]) == list(STAGES)
    spec = hookspecs.on_stage.__doc__ or ""
    assert re.findall(r'``"([a-z]+)"``', spec) == list(STAGES)


def test_quantize_emits_the_documented_sequence(pm, tmp_path):
    from quantplug import QuantRecipe
    from quantplug.pipeline import quantize_to_dir
    from quantplug.registry import build_registry
    from quantplug.stages import STAGES

    observer = _Observer()
    pm.register(observer, name="observer")
    registry = build_registry(pm)
    recipe = QuantRecipe(method="ptq", calib_batches=2, calib_batch_size=16)
    result = quantize_to_dir(registry.workload("digits-mobilenet"), recipe, tmp_path / "out", registry=registry,
                             pm=pm, progress=False)
    names = [name for name, _, _ in observer.calls]
    assert names == ["prepare", "method", "export", "evaluate"] == list(STAGES[:4])
    assert all(seconds >= 0 for _, seconds, _ in observer.calls)
    assert list(result.metrics["stages"]) == names  # metrics.json times the same stages
