"""QDQ export: ONNX Runtime reproduces the fake-quant model, fuses it into integer kernels, stores 8/4-bit
weights; the TensorRT rule check; dynamic export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import quantplug
from quantplug import QuantRecipe
from quantplug.errors import ExportError
from quantplug.export import check_tensorrt_rules, export_fp32, export_qdq, export_quantized
from quantplug.export.bench import optimized_op_counts, session
from tests.quant_models import MLP, batches, tiny_resnet


@pytest.fixture(scope="module")
def registry():
    return quantplug.build_registry(quantplug.get_plugin_manager(load_entrypoints=False))


def _quantize(model, registry, data=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantplug.quantize(model, QuantRecipe(calib_batches=8, **kw), data or batches(8), registry=registry,
                                  progress=False)


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    return session(path, 1).run(None, {"input": x.numpy()})[0]


def test_onnxruntime_export_matches_fake_quant_and_fuses(registry, tmp_path: Path) -> None:
    model = tiny_resnet(0)
    q = _quantize(model, registry)
    x = batches(1, batch=5, seed=3)[0]
    path = export_qdq(q, (x[:1],), tmp_path / "q.onnx", "onnxruntime", ["input"], ["logits"], registry=registry)
    out = _run(path, x)  # dynamic batch: exported with batch 1, run with 5
    with torch.no_grad():
        ref = q(x).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)
    ops = optimized_op_counts(path)
    assert ops.get("QLinearConv") == 3 and ops.get("QLinearAdd") == 1, ops
    assert "Conv" not in ops and "FusedConv" not in ops
    graph = onnx.load(path).graph
    acts = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    inits = {i.name: i for i in graph.initializer}
    assert all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in acts)
    weights = [i for i in graph.initializer if i.name.endswith("_quantized")]
    assert len(weights) == 4 and all(w.data_type == onnx.TensorProto.INT8 for w in weights)


def test_int8_file_is_about_a_quarter_of_fp32(registry, tmp_path: Path) -> None:
    model = MLP(256, 256)
    data = [torch.randn(8, 256) for _ in range(4)]
    q = _quantize(model, registry, data)
    fp = export_fp32(model, (data[0],), tmp_path / "fp.onnx")
    qp = export_qdq(q, (data[0],), tmp_path / "q.onnx", registry=registry)
    ratio = qp.stat().st_size / fp.stat().st_size
    assert 0.24 < ratio < 0.30


@pytest.mark.parametrize("granularity", ["per-channel", "per-group"])
def test_int4_weights_are_stored_as_int4_and_match(registry, tmp_path: Path, granularity: str) -> None:
    model = MLP(256, 256)
    data = [torch.randn(8, 256) for _ in range(4)]
    q = _quantize(model, registry, data, weight_bits=4, granularity=granularity, group_size=32)
    x = torch.randn(6, 256)
    path = export_qdq(q, (x[:1],), tmp_path / "q4.onnx", registry=registry)
    m = onnx.load(path)
    assert m.opset_import[0].version >= 21
    w4 = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT4]
    assert len(w4) >= 2
    if granularity == "per-group":
        dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute)]
        assert len(dq) == 2
    fp = export_fp32(model, (x[:1],), tmp_path / "fp.onnx")
    assert path.stat().st_size < 0.2 * fp.stat().st_size  # 4-bit weights: about an eighth
    with torch.no_grad():
        ref = q(x).numpy()
    out = session(path, 1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_tensorrt_export_passes_its_rule_check(registry, tmp_path: Path) -> None:
    q = _quantize(tiny_resnet(0), registry, target="tensorrt")
    x = batches(1, batch=2)[0]
    path = export_qdq(q, (x[:1],), tmp_path / "trt.onnx", "tensorrt", ["input"], ["logits"], registry=registry)
    m = onnx.load(path)
    check_tensorrt_rules(m)
    zps = [i for i in m.graph.initializer if "zero_point" in i.name or i.data_type == onnx.TensorProto.INT8]
    assert zps
    out = _run(path, x)
    with torch.no_grad():
        ref = q(x).numpy()
    # ONNX Runtime rounds x / scale, torch x * (1 / scale): exact ties may differ by one step
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_tensorrt_rule_check_names_the_offending_node(registry, tmp_path: Path) -> None:
    q = _quantize(tiny_resnet(0), registry)  # onnxruntime scheme: UINT8, nonzero zero points
    path = export_qdq(q, (batches(1)[0],), tmp_path / "ort.onnx", "onnxruntime", ["input"], ["logits"],
                      registry=registry)
    with pytest.raises(ExportError, match=r"QuantizeLinear node '[^']+'.*(zero point|UINT8)"):
        check_tensorrt_rules(onnx.load(path))
    # a per-channel activation scale is also named
    m = onnx.load(path)
    q_node = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    for init in m.graph.initializer:
        if init.name in q_node.input[2:]:
            init.data_type = onnx.TensorProto.INT8
            init.ClearField("raw_data")
            init.int32_data[:] = [0]
        if init.name == q_node.input[1]:
            init.dims[:] = [2]
            init.ClearField("raw_data")
            init.float_data[:] = [0.1, 0.1]
    with pytest.raises(ExportError, match=rf"{q_node.name}.*per-tensor"):
        check_tensorrt_rules(m)


def test_export_refuses_an_uncalibrated_model(registry, tmp_path: Path) -> None:
    from quantplug.quant.prepare import act_quantizers, prepare

    p = prepare(tiny_resnet(0), QuantRecipe(), registry.backend("onnxruntime").scheme, (batches(1)[0],))
    for a in act_quantizers(p):
        a.mode = "observe"
    with pytest.raises(ExportError, match="calibrate"):
        export_qdq(p, (batches(1)[0],), tmp_path / "x.onnx", registry=registry)
    assert not (tmp_path / "x.onnx").exists()


def test_dynamic_export_matches_the_torch_emulation(registry, tmp_path: Path) -> None:
    model = MLP()
    q = quantplug.quantize(model, QuantRecipe(method="dynamic"), None, registry=registry, progress=False)
    x = torch.randn(5, 64)
    path = export_quantized(q, (x[:1],), tmp_path / "dyn.onnx", registry=registry)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    with torch.no_grad():
        ref = q(x).numpy()
    out = session(path, 1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)


class _Bag(torch.nn.Module):
    """Embedding lookup + linear: the shape of a transformer's input layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(500, 32)
        self.fc = torch.nn.Linear(32, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids)).mean(dim=1)


def test_embedding_rows_are_looked_up_before_dequantizing(registry, tmp_path: Path) -> None:
    model = _Bag().eval()
    data = [torch.randint(0, 500, (4, 12), generator=torch.Generator().manual_seed(i)) for i in range(8)]
    q = _quantize(model, registry, data)
    path = export_qdq(q, (data[0],), tmp_path / "q.onnx", "onnxruntime", ["ids"], ["out"], registry=registry)
    graph = onnx.load(path).graph
    producer = {o: n for n in graph.node for o in n.output}
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in {i.name for i in graph.initializer}]
    tables = [i for i in graph.initializer if list(i.dims) == [500, 32]]
    assert len(tables) == 1 and tables[0].data_type == onnx.TensorProto.INT8  # the table stays INT8 in the file
    assert any(n.input[0] == tables[0].name for n in lookups)  # rows are gathered from the INT8 table itself
    assert not any(producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "DequantizeLinear"
                   for n in graph.node if n.op_type == "Gather")  # no dequantizing of the whole table
    ids = torch.randint(0, 500, (3, 12), generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        ref = q(ids).numpy()
    out = session(path, 1).run(None, {"ids": ids.numpy()})[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)


class _MaskedAttention(torch.nn.Module):
    """Scores + an additive padding mask (float32 minimum, as transformers build it), softmax, weighted sum."""

    def forward(self, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = q @ q.transpose(-1, -2) / 4.0
        additive = (1.0 - mask[:, None, :].float()) * torch.finfo(torch.float32).min
        return torch.softmax(scores + additive, dim=-1) @ q


def test_masked_softmax_is_guarded_and_unchanged(tmp_path: Path, monkeypatch) -> None:
    import quantplug.export.onnx_export as onnx_export

    torch.manual_seed(0)
    q = torch.randn(4, 64, 16) * 3
    mask = torch.zeros(4, 64, dtype=torch.int64)
    for i, n in enumerate((64, 40, 9, 1)):
        mask[i, :n] = 1
    feeds = {"q": q.numpy(), "mask": mask.numpy()}
    path = export_fp32(_MaskedAttention(), (q, mask), tmp_path / "att.onnx", ["q", "mask"], ["out"])
    graph = onnx.load(path).graph
    soft = next(n for n in graph.node if n.op_type == "Softmax")
    producer = {o: n for n in graph.node for o in n.output}
    assert producer[soft.input[0]].op_type == "Max"  # the guard sits right before the softmax
    assert sum(n.op_type == "ReduceMax" for n in graph.node) == 1
    out = session(path, 1).run(None, feeds)[0]
    monkeypatch.setattr(onnx_export, "guard_masked_softmax", lambda proto: 0)
    plain = export_fp32(_MaskedAttention(), (q, mask), tmp_path / "plain.onnx", ["q", "mask"], ["out"])
    assert not any(n.op_type == "ReduceMax" for n in onnx.load(plain).graph.node)
    np.testing.assert_array_equal(out, session(plain, 1).run(None, feeds)[0])  # the same numbers, bit for bit
    with torch.no_grad():
        np.testing.assert_allclose(out, _MaskedAttention()(q, mask).numpy(), rtol=1e-5, atol=1e-5)
