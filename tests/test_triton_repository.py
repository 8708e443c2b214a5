"""Repository writer and checker: exact files, parsed config fields, versions, hooks, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantplug.errors import ConfigError, RepositoryError
from quantplug.triton.config import load_config
from quantplug.triton.repository import add_from_output, add_model, check_repository, replace_model


def tiny_onnx(path: Path, *, batch: str | int = "batch", features: int = 4, dynamic_features: bool = False) -> Path:
    """y = Relu(x @ W): a real ONNX graph with input x [batch, features] and output y [batch, 3]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((features, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, "f" if dynamic_features else features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "tiny.onnx")


def test_embedded_model_files_and_config(tmp_path: Path, onnx_file: Path) -> None:
    repo = tmp_path / "repo"
    version = add_model(repo, "tiny", onnx_file, max_batch_size=16, preferred_batch_sizes=[4, 8],
                        max_queue_delay_us=250, instance_count=2, threads=3)
    assert version == repo / "tiny" / "1"
    assert files_under(repo) == {"tiny/config.pbtxt", "tiny/1/model.onnx", "tiny/1/model.py"}
    cfg = load_config(repo / "tiny" / "config.pbtxt")
    assert (cfg.name, cfg.backend, cfg.platform, cfg.max_batch_size) == ("tiny", "python", "", 16)
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.input] == [("x", 11, [4])]  # 11 = TYPE_FP32
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("y", [3])]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, 2)]  # 2 = KIND_CPU
    assert cfg.parameters["intra_op_threads"].string_value == "3"
    assert cfg.parameters["onnx_file"].string_value == "model.onnx"
    assert cfg.version_policy.latest.num_versions == 1
    assert [(w.batch_size, list(w.inputs["x"].dims)) for w in cfg.model_warmup] == [(1, [4])]
    assert check_repository(repo) == []


def test_new_version_never_overwrites(tmp_path: Path, onnx_file: Path) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "tiny", onnx_file)
    first = (repo / "tiny" / "1" / "model.onnx").read_bytes()
    assert add_model(repo, "tiny", tiny_onnx(tmp_path / "other.onnx")) == repo / "tiny" / "2"
    assert (repo / "tiny" / "1" / "model.onnx").read_bytes() == first
    assert sorted(p.name for p in (repo / "tiny").iterdir()) == ["1", "2", "config.pbtxt"]


def test_incompatible_new_version_is_refused_and_nothing_is_written(tmp_path: Path, onnx_file: Path) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "tiny", onnx_file)
    before = files_under(repo)
    with pytest.raises(RepositoryError, match="different signature"):
        add_model(repo, "tiny", tiny_onnx(tmp_path / "wide.onnx", features=5))
    assert files_under(repo) == before and not [p for p in repo.iterdir() if p.name.startswith(".")]


def test_container_flavour_with_tensorrt_accelerator(tmp_path: Path, onnx_file: Path) -> None:
    version = add_model(tmp_path / "repo", "tiny", onnx_file, flavour="container",
                        options={"accelerator": "tensorrt"}, threads=2)
    assert files_under(version) == {"model.onnx"}
    cfg = load_config(version.parent / "config.pbtxt")
    assert (cfg.platform, cfg.backend, cfg.instance_group[0].kind) == ("onnxruntime_onnx", "onnxruntime", 1)
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "INT8"
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"


def test_tensorrt_deferred_build_is_reported_until_built(tmp_path: Path, onnx_file: Path) -> None:
    from quantplug.builtin.backends.tensorrt import tensorrt_unavailable_reason

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT is available here: the plan is built, not deferred")
    with pytest.raises(Exception, match="tensorrt does not import|no usable GPU"):
        add_model(tmp_path / "repo", "trt", onnx_file, backend="tensorrt")
    assert not (tmp_path / "repo" / "trt").exists()
    version = add_model(tmp_path / "repo", "trt", onnx_file, backend="tensorrt", max_batch_size=8,
                        options={"defer_build": True})
    cfg = load_config(version.parent / "config.pbtxt")
    assert (cfg.platform, cfg.instance_group[0].kind) == ("tensorrt_plan", 1)  # 1 = KIND_GPU
    assert json.loads((version / "build.json").read_text())["max_batch"] == 8
    problems = check_repository(tmp_path / "repo")
    assert len(problems) == 1 and "deploy/build_engines.sh" in problems[0]


def test_tensorrt_backend_refuses_cpu(tmp_path: Path, onnx_file: Path) -> None:
    with pytest.raises(ConfigError, match="GPU only"):
        add_model(tmp_path / "repo", "trt", onnx_file, backend="tensorrt", kind="KIND_CPU")


def test_add_from_output_names_and_traceability(tmp_path: Path) -> None:
    out = tmp_path / "quantized"
    out.mkdir()
    tiny_onnx(out / "model.onnx")
    tiny_onnx(out / "model_fp32.onnx")
    (out / "recipe.json").write_text('{"method": "ptq"}')
    (out / "metrics.json").write_text('{"accuracy": 99.0}')
    added = add_from_output(tmp_path / "repo", out, "cnn")
    assert added == {"fp32": tmp_path / "repo" / "cnn_fp32" / "1", "int8": tmp_path / "repo" / "cnn_int8" / "1"}
    assert files_under(tmp_path / "repo" / "cnn_int8") == {
        "config.pbtxt", "recipe.json", "1/model.onnx", "1/model.py", "1/recipe.json", "1/metrics.json"}
    with pytest.raises(RepositoryError, match="not a `quantplug quantize` output folder"):
        add_from_output(tmp_path / "repo", tmp_path / "repo", "x")


def test_adjust_triton_config_hook_runs_and_cannot_break_validation(tmp_path: Path, onnx_file: Path, pm) -> None:
    from quantplug import hookimpl

    class Tuner:
        @hookimpl
        def adjust_triton_config(self, config, model_name, backend):
            config.dynamic_batching.max_queue_delay_microseconds = 1234
            config.parameters["tuned_for"].string_value = f"{model_name}/{backend}"

    pm.register(Tuner())
    version = add_model(tmp_path / "repo", "tiny", onnx_file, pm=pm)
    cfg = load_config(version.parent / "config.pbtxt")
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 1234
    assert cfg.parameters["tuned_for"].string_value == "tiny/onnxruntime"

    class Breaker:
        @hookimpl
        def adjust_triton_config(self, config):
            config.input[0].name = "not_x"

    pm.register(Breaker())
    with pytest.raises(RepositoryError, match="do not match the model's inputs"):
        add_model(tmp_path / "repo", "tiny2", onnx_file, pm=pm)
    assert not (tmp_path / "repo" / "tiny2").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch_size": -1}, "negative"),
    ({"preferred_batch_sizes": [128]}, "outside 1..max_batch_size"),
    ({"extra": {"no_such_field": 1}}, "no_such_field"),
    ({"backend": "nope"}, 'unknown backend "nope"'),
    ({"flavour": "nope"}, "unknown flavour"),
])
def test_impossible_values_are_refused_before_writing(tmp_path: Path, onnx_file: Path, kwargs, message) -> None:
    from quantplug.errors import QuantplugError

    with pytest.raises(QuantplugError, match=message):
        add_model(tmp_path / "repo", "tiny", onnx_file, **kwargs)
    assert not (tmp_path / "repo" / "tiny").exists()


def test_fixed_batch_onnx_needs_max_batch_size_zero(tmp_path: Path) -> None:
    fixed = tiny_onnx(tmp_path / "fixed.onnx", batch=1)
    with pytest.raises(RepositoryError, match="no dynamic batch"):
        add_model(tmp_path / "repo", "fixed", fixed)
    version = add_model(tmp_path / "repo", "fixed", fixed, max_batch_size=0)
    cfg = load_config(version.parent / "config.pbtxt")
    assert list(cfg.input[0].dims) == [1, 4] and not cfg.HasField("dynamic_batching")


def test_missing_onnx_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        add_model(tmp_path / "repo", "tiny", tmp_path / "absent.onnx")


# --- check_repository on hand-written repositories ------------------------------------------------

def write_model(repo: Path, name: str, config: str, files: dict[str, bytes] | None = None) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    for fname, data in (files or {}).items():
        (repo / name / "1" / fname).write_bytes(data)


GOOD = '''name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }} ]
'''


def test_check_hand_written_good_repository(tmp_path: Path, onnx_file: Path) -> None:
    write_model(tmp_path, "m", GOOD.format(name="m"), {"model.onnx": onnx_file.read_bytes()})
    assert check_repository(tmp_path) == []


def test_check_reports_each_problem_with_its_file(tmp_path: Path, onnx_file: Path) -> None:
    onnx_bytes = onnx_file.read_bytes()
    write_model(tmp_path, "unknown_field", GOOD.format(name="unknown_field") + "\nbatch_sise: 3\n",
                {"model.onnx": onnx_bytes})
    write_model(tmp_path, "bad_enum", GOOD.format(name="bad_enum").replace("TYPE_FP32", "TYPE_FLOAT", 1),
                {"model.onnx": onnx_bytes})
    write_model(tmp_path, "impossible", GOOD.format(name="impossible").replace("max_batch_size: 8",
                "max_batch_size: -2").replace("dims: [ 3 ]", "dims: [ 0 ]"), {"model.onnx": onnx_bytes})
    write_model(tmp_path, "nofile", GOOD.format(name="nofile"))
    write_model(tmp_path, "wrongname", GOOD.format(name="other"), {"model.onnx": onnx_bytes})
    write_model(tmp_path, "mismatch", GOOD.format(name="mismatch").replace('name: "x"', 'name: "input"'),
                {"model.onnx": onnx_bytes})
    problems = check_repository(tmp_path)
    text = "\n".join(problems)
    assert f"{tmp_path / 'unknown_field' / 'config.pbtxt'}:7:1" in text and "batch_sise" in text
    assert f"{tmp_path / 'bad_enum' / 'config.pbtxt'}:4:" in text and "TYPE_FLOAT" in text
    assert "impossible: max_batch_size is -2" in text and "invalid dims [0]" in text
    assert f"nofile: {tmp_path / 'nofile' / '1' / 'model.onnx'} is missing" in text
    assert "wrongname: name 'other' differs from its folder 'wrongname'" in text
    assert "mismatch: config inputs ['input'] do not match the model's inputs ['x']" in text


def test_check_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    problems = check_repository(tmp_path)
    assert len(problems) == 1 and "not a Triton model repository" in problems[0]
    assert "not a folder" in check_repository(tmp_path / "absent")[0]


def test_replace_model_keeps_one_version_and_restores_on_failure(tmp_path: Path, onnx_file: Path) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "m", onnx_file)
    add_model(repo, "m", onnx_file)
    assert sorted(p.name for p in (repo / "m").iterdir() if p.is_dir()) == ["1", "2"]
    replace_model(repo, "m", onnx_file)
    assert sorted(p.name for p in (repo / "m").iterdir() if p.is_dir()) == ["1"]
    before = files_under(repo)
    with pytest.raises(RepositoryError):
        replace_model(repo, "m", onnx_file, max_batch_size=-1)  # invalid: nothing may be lost
    assert files_under(repo) == before
    assert check_repository(repo) == []
