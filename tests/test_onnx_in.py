"""ONNX in: real ONNX files (torch exports and onnx.helper graphs) through conversion, the same engine,
export and ONNX Runtime; bad files answered with one line before any calibration."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from quantplug.cli import main
from quantplug.onnx_in import OnnxConversionError, load_onnx, quantize_onnx
from quantplug.quant.prepare import prepare
from quantplug.recipe import LayerOverride, QuantRecipe
from quantplug.registry import build_registry


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(y) + x)
        x = self.pool(x)
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = TinyResNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding matters
        bns: list[Any] = [m.stem[1], m.bn1]
        for bn in bns:
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _export(model: nn.Module, path: Path, dynamo: bool = False) -> Path:
    x = torch.randn(2, 1, 8, 8)
    if dynamo:
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["scores"], dynamo=True,
                          external_data=False, verbose=False)
    else:
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["scores"], dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}}, opset_version=17)
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(_model(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 1, 8, 8)).astype(np.float32)
    folder = tmp_path_factory.mktemp("data")
    with torch.no_grad():
        labels = _model()(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(folder / "labelled.npz", image=x, labels=labels)
    np.savez(folder / "inputs.npz", image=x)
    return folder / "labelled.npz", folder / "inputs.npz"


def test_conversion_gives_plain_layers_with_pytorch_names_and_matches_onnxruntime(tiny_onnx: Path) -> None:
    m = load_onnx(tiny_onnx)
    assert m.input_names == ("image",) and m.output_names == ("scores",) and m.dynamic_batch
    assert m.max_abs_diff is not None and m.max_abs_diff < 1e-4
    gm = m.module
    convs = [n for n, mod in gm.named_modules() if isinstance(mod, nn.Conv2d)]
    assert sorted(convs) == ["conv1", "conv2", "stem.0"]  # BN folded by the exporter; names from its scopes
    assert isinstance(gm.get_submodule("fc"), nn.Linear)
    adds = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is operator.add]
    assert len(adds) == 1
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)  # another batch size
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"image": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(gm(torch.from_numpy(x)).numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("dynamo", [False, True])
def test_prepare_places_the_same_quantizers_as_on_the_pytorch_module(tmp_path: Path, dynamo: bool) -> None:
    model = _model()
    path = _export(model, tmp_path / "m.onnx", dynamo=dynamo)
    scheme = build_registry().backend("onnxruntime").scheme
    recipe = QuantRecipe()
    example = (torch.randn(2, 1, 8, 8),)
    from_torch: Any = prepare(model, recipe, scheme, example).quantplug_report  # type: ignore[union-attr,assignment]
    from_onnx: Any = prepare(load_onnx(path).module, recipe, scheme, example).quantplug_report  # type: ignore[union-attr]
    assert from_onnx.traced
    assert sorted(from_onnx.layers) == sorted(from_torch.layers) == ["conv1", "conv2", "fc", "stem.0"]
    assert len(from_onnx.activations) == len(from_torch.activations)


def test_ptq_from_onnx_writes_a_quantize_output_with_the_original_io(tiny_onnx: Path, tiny_data: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = quantize_onnx(tiny_onnx, str(tiny_data[0]), out, calib_batches=2, calib_batch_size=32)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model_fp32.onnx", "recipe.json"]
    q = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in q.graph.input] == ["image"] and [o.name for o in q.graph.output] == ["scores"]
    assert q.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch kept
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) >= 4
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    assert ort.InferenceSession(str(out / "model.onnx")).run(None, {"image": x})[0].shape == (3, 4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["workload"] == "onnx:tiny.onnx"
    assert metrics["fp32"]["onnxruntime"]["accuracy"] == 100.0  # labels are the FP32 model's predictions
    assert metrics["quantized"]["onnxruntime"]["accuracy"] >= 80.0
    assert r.metrics["engine"]["traced"] is True


def test_qad_without_labels_int4_and_overrides_from_onnx(tiny_onnx: Path, tiny_data: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    recipe = QuantRecipe(method="qad", weight_bits=4, qat_epochs=1, calib_batches=2, train_batch_size=32,
                         layer_overrides={"stem.*": LayerOverride(weight_bits=8), "fc": LayerOverride(fp=True)})
    r = quantize_onnx(tiny_onnx, str(tiny_data[1]), tmp_path / "qad", recipe, calib_batch_size=32)
    layers = r.metrics["engine"]["quantized_layers"]
    assert layers == {"stem.0": 8, "conv1": 4, "conv2": 4}
    assert r.metrics["engine"]["fp_layers"] == ["fc"]
    assert "train_loss" in r.metrics["train"]
    assert r.metrics["quantized"]["onnxruntime"]["cosine"] > 0.9  # fidelity to the FP32 ONNX graph
    with pytest.raises(Exception, match="labels"):
        quantize_onnx(tiny_onnx, str(tiny_data[1]), tmp_path / "qat", method="qat", calib_batches=1)


def test_static_batch_export_gets_a_free_batch_dimension(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 2])
    shape = numpy_helper.from_array(np.array([2, 2, 2], dtype=np.int64), "shape")
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"])],
                          "g", [x], [y], [shape])
    path = tmp_path / "static.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    gm = load_onnx(path).module
    assert gm(torch.ones(3, 4)).shape == (3, 2, 2)


def _save(tmp_path: Path, nodes: list, name: str, inits: list | None = None, opsets: list | None = None) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits or []),
                              opset_imports=opsets or [helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    unknown = _save(tmp_path, [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"])],
                    "unknown.onnx")
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["n", 4])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", 4])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    sub = _save(tmp_path, [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
                "subgraph.onnx", [cond])
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    ext_model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w]),
        opset_imports=[helper.make_opsetid("", 17)])
    ext = tmp_path / "external.onnx"
    onnx.save(ext_model, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.bin", size_threshold=0)
    (tmp_path / "external.bin").unlink()
    fn = helper.make_function("local", "F", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    fn_path = _save(tmp_path, [helper.make_node("F", ["x"], ["y"], domain="local")], "functions.onnx",
                    opsets=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    with_fn = onnx.load(str(fn_path))
    with_fn.functions.append(fn)
    onnx.save(with_fn, str(fn_path))
    return {"unknown": (unknown, "no converter for op(s) Det (node"),
            "subgraph": (sub, "holds subgraphs"),
            "functions": (fn_path, "1 local function graph(s) (F)"),
            "external": (ext, "external file 'external.bin', which is missing"),
            "custom": (_save(tmp_path, [helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")], "custom.onnx",
                             opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
                       "com.microsoft.Gelu")}


def test_bad_files_are_one_line_before_calibration_exit_2_nothing_written(tmp_path: Path, tiny_data: tuple[Path, Path],
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    for kind, (path, expected) in _bad_files(tmp_path).items():
        with pytest.raises(OnnxConversionError, match="^" + str(path).replace(".", r"\.")):
            load_onnx(path)
        out = tmp_path / f"out-{kind}"
        with pytest.raises(SystemExit) as exc:
            main(["quantize", "--onnx", str(path), "--data", str(tiny_data[1]), "--output", str(out), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2, kind
        assert len(err.splitlines()) == 1 and expected in err, (kind, err)
        assert not out.exists() and not list(tmp_path.glob(f".out-{kind}*"))


def test_dynamic_shape_arithmetic_is_named(tmp_path: Path) -> None:
    shape_nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])]
    with pytest.raises(OnnxConversionError, match="Shape node .*dynamic shape"):
        load_onnx(_save(tmp_path, shape_nodes, "shape.onnx"))


def test_repo_add_takes_an_onnx_output_like_any_other(tiny_onnx: Path, tiny_data: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    from quantplug.triton.repository import add_from_output, check_repository

    out = tmp_path / "out"
    quantize_onnx(tiny_onnx, str(tiny_data[0]), out, calib_batches=1, calib_batch_size=32)
    added = add_from_output(tmp_path / "repo", out, "tiny")
    assert set(added) == {"fp32", "int8"}
    assert check_repository(tmp_path / "repo") == []
    config = (tmp_path / "repo" / "tiny_int8" / "config.pbtxt").read_text()
    assert '"image"' in config and '"scores"' in config


def test_cli_onnx_with_an_npz_writes_the_output(tiny_onnx: Path, tiny_data: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    main(["quantize", "--onnx", str(tiny_onnx), "--data", str(tiny_data[0]), "--calib-batches", "1",
          "--calib-batch-size", "32", "--output", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out
    assert "data " in captured.err and "labels" in captured.err  # what was read and how it was split
    assert json.loads((out / "recipe.json").read_text())["calib_batches"] == 1
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--onnx", str(tiny_onnx), "--model", "x:y", "--output", str(tmp_path / "two")])
    assert exc.value.code == 2 and "exactly one of" in capsys.readouterr().err
