"""`repo add` warns, in one line, when a quantized model will not really run in integer under ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import quantplug
from quantplug import QuantRecipe
from quantplug.export import export_fp32, export_qdq
from quantplug.triton.integer_check import integer_warnings
from quantplug.triton.repository import add_model
from tests.quant_models import batches, tiny_resnet


@pytest.fixture(scope="module")
def registry() -> Any:
    return quantplug.build_registry(quantplug.get_plugin_manager(load_entrypoints=False))


def _export(tmp_path: Path, registry: Any, name: str, **recipe: Any) -> Path:
    data = batches(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantplug.quantize(tiny_resnet(0), QuantRecipe(calib_batches=4, **recipe), data, registry=registry,
                               progress=False)
        return export_qdq(q, (data[0][:1],), tmp_path / f"{name}.onnx", recipe.get("target", "onnxruntime"),
                          registry=registry)


def _ours(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "ONNX Runtime" in str(w.message)]


def test_repo_add_warns_for_a_tensorrt_model_in_the_onnxruntime_backend(tmp_path: Path, registry: Any) -> None:
    path = _export(tmp_path, registry, "trt", target="tensorrt")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        add_model(tmp_path / "repo", "resnet", path, backend="onnxruntime")
    (message,) = _ours(record)
    assert "tensorrt scheme" in message and "--target onnxruntime" in message and "\n" not in message


def test_repo_add_warns_when_little_runs_in_integer(tmp_path: Path, registry: Any) -> None:
    all_float = _export(tmp_path, registry, "float", layer_overrides={"*": {"fp": True}})
    (message,) = integer_warnings("m", all_float, "onnxruntime", warn=False)
    assert "only 0% of its conv/matmul multiply-adds in integer" in message
    good = _export(tmp_path, registry, "int8")
    fp32 = export_fp32(tiny_resnet(0), (batches(1)[0][:1],), tmp_path / "fp32.onnx")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        add_model(tmp_path / "repo", "good", good, backend="onnxruntime")
        add_model(tmp_path / "repo", "fp32", fp32, backend="onnxruntime")  # not quantized: nothing to say
    assert _ours(record) == []
