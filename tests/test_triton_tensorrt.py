"""The tensorrt backend: a real engine from the QDQ ONNX (needs TensorRT 10+ and a GPU; skips elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantplug.builtin.backends.tensorrt import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason()
pytestmark = [pytest.mark.tensorrt, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


def test_plan_built_from_qdq_onnx_with_batch_profile(tmp_path: Path) -> None:
    import tensorrt as trt

    from quantplug.triton.config import load_config
    from quantplug.triton.repository import add_model, check_repository

    from .triton_models import DigitsWorkload, build_models

    _, int8 = build_models(tmp_path / "q", DigitsWorkload())
    cache = tmp_path / "timing.cache"
    version = add_model(tmp_path / "repo", "cnn_trt", int8, backend="tensorrt", max_batch_size=32,
                        preferred_batch_sizes=[16], options={"timing_cache": str(cache)})
    assert (version / "model.plan").stat().st_size > 0 and cache.stat().st_size > 0
    cfg = load_config(version.parent / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.instance_group[0].kind == 1  # KIND_GPU
    assert check_repository(tmp_path / "repo") == []
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine((version / "model.plan").read_bytes())
    assert engine.num_optimization_profiles == 1
    low, opt, high = engine.get_tensor_profile_shape("image", 0)
    assert (low[0], opt[0], high[0]) == (1, 16, 32) and tuple(high[1:]) == (1, 8, 8)


def test_unsupported_graph_is_a_clear_error(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from quantplug.builtin.backends.tensorrt import build_engine
    from quantplug.errors import ExportError

    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ExportError, match="NoSuchOp"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.plan", max_batch=4)
    assert not (tmp_path / "bad.plan").exists()
