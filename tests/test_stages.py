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
    with pytest.raises(RuntimeError), stage(pm, "calibrate"):
        raise RuntimeError("boom")
    assert observer.calls == []
