"""Capture by execution (quantplug.quant.capture) on models torch.fx cannot trace, Hugging Face ones
included, checked on the exported QDQ graph under the real ONNX Runtime (quantplug.export.coverage)."""

from __future__ import annotations

import collections
import copy
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import quantplug
from quantplug import QuantRecipe
from quantplug.export import export_fp32, export_qdq
from quantplug.export.coverage import integer_share
from quantplug.quant.prepare import act_quantizers
from tests.quant_models import Untraceable, batches, tiny_resnet

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def registry() -> Any:
    return quantplug.build_registry(quantplug.get_plugin_manager(load_entrypoints=False))


class Logits(nn.Module):
    """A Hugging Face model called with keywords, returning its logits (as quantplug.hf wraps them)."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor, *mask: torch.Tensor) -> torch.Tensor:
        kwargs = {self.key: x, **({"attention_mask": mask[0]} if mask else {})}
        return self.model(**kwargs).logits


def _eager(model: nn.Module) -> nn.Module:
    model.config._attn_implementation = "eager"  # explicit matmuls (as quantplug.hf loads models)
    return model


def _hf(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    t = transformers
    torch.manual_seed(0)
    img = (torch.randn(4, 3, 32, 32),)
    if name == "resnet":
        c = t.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)
        return Logits(t.ResNetForImageClassification(c), "pixel_values"), img
    if name == "mobilenetv2":
        c = t.MobileNetV2Config(image_size=32, depth_multiplier=0.35, num_labels=10)
        return Logits(t.MobileNetV2ForImageClassification(c), "pixel_values"), img
    if name == "convnext":
        c = t.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)
        return Logits(t.ConvNextForImageClassification(c), "pixel_values"), img
    if name == "vit":
        c = t.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=10)
        return Logits(_eager(t.ViTForImageClassification(c)), "pixel_values"), img
    c = t.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=32)
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[0, 10:] = 0
    return Logits(_eager(t.DistilBertForSequenceClassification(c)), "input_ids"), (torch.randint(0, 100, (4, 16)), mask)


def _ptq(model: nn.Module, example: tuple[torch.Tensor, ...], registry: Any, target: str = "onnxruntime") -> nn.Module:
    g = torch.Generator().manual_seed(1)
    data = [tuple(torch.randn(t.shape, generator=g) if t.is_floating_point() else t for t in example)
            for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # thin calibration: fine for placement
        return quantplug.quantize(model.eval(), QuantRecipe(target=target, calib_batches=2), data,
                                  registry=registry, progress=False)


def _names(example: tuple[torch.Tensor, ...]) -> list[str]:
    return ["input"] if len(example) == 1 else ["input_ids", "attention_mask"]


@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2", "convnext", "vit", "distilbert"])
def test_hf_models_are_captured_and_run_in_integer(arch: str, registry, tmp_path: Path) -> None:
    model, example = _hf(arch)
    q = _ptq(model, example, registry)
    report = q.quantplug_report
    assert not report.traced and report.trace_error and report.capture == "execution", report.capture_error
    if arch in ("vit", "distilbert"):
        assert report.attention_matmuls == 2 * 2  # QK^T and AV in each of the two layers
    one = tuple(t[:1] for t in example)
    path = export_qdq(q, one, tmp_path / "model.onnx", "onnxruntime", _names(example), ["logits"], registry=registry)
    feeds = {n: t.numpy() for n, t in zip(_names(example), example, strict=True)}
    coverage = integer_share(path, feeds)
    floats = [(layer.node, layer.op) for layer in coverage.layers if not layer.integer]
    assert coverage.share >= 0.9 and len(coverage.layers) >= 3, floats
    assert all(layer.macs > 0 for layer in coverage.layers), coverage.layers
    fp32 = integer_share(export_fp32(model, one, tmp_path / "fp32.onnx", _names(example), ["logits"]), feeds)
    assert fp32.share == 0 and fp32.total_macs > 0


def test_captured_graph_exports_like_the_traced_one(registry, tmp_path: Path) -> None:
    traced = tiny_resnet(0)
    untraceable = Untraceable()
    untraceable.load_state_dict(traced.state_dict())
    example = (batches(1)[0],)
    graphs = []
    for model in (traced, untraceable):
        q = _ptq(model, example, registry)
        path = export_qdq(q, (example[0][:1],), tmp_path / f"{type(model).__name__}.onnx", registry=registry)
        import onnx

        graphs.append(collections.Counter(n.op_type for n in onnx.load(path).graph.node
                                          if n.op_type not in ("ReduceSum", "Greater", "If", "Constant")))
    assert graphs[0] == graphs[1]
    assert integer_share(tmp_path / "Untraceable.onnx").share == 1.0


def test_integer_share_counts_float_convs_on_dequantized_weights(registry, tmp_path: Path) -> None:
    """Quantizing only layer inputs (the old fallback) leaves ONNX Runtime float convs on DQ(weight)."""
    from quantplug.bench.zoo import _legacy_prepare
    from quantplug.quant import api

    example = (batches(1)[0],)
    real, api.prepare = api.prepare, _legacy_prepare  # type: ignore[assignment]
    try:
        q = _ptq(Untraceable(), example, registry)
    finally:
        api.prepare = real  # type: ignore[assignment]
    coverage = integer_share(export_qdq(q, (example[0][:1],), tmp_path / "old.onnx", registry=registry))
    assert all(layer.macs > 0 for layer in coverage.layers)
    assert 0 < coverage.share < 0.9 and any(not layer.integer for layer in coverage.layers)


def test_captured_model_trains_and_copies(registry) -> None:
    model, example = _hf("vit")
    q = _ptq(model, example, registry)
    with torch.no_grad():
        ref, fp = q(*example), model(*example)
    assert not torch.equal(ref, fp)  # the quantizers act
    twin = copy.deepcopy(q)  # QAT/QAD and compare_calibrators copy prepared models: the sites follow the copy
    assert all(a is not b for a, b in zip(act_quantizers(twin), act_quantizers(q), strict=True))
    with torch.no_grad():
        torch.testing.assert_close(twin(*example), ref)
    for a in act_quantizers(twin):
        a.mode = "off"
    with torch.no_grad():
        assert not torch.equal(twin(*example), ref)  # the copy's own quantizers, not the original's
    q.train()
    loss = q(*example).logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in q.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:5]) and float(grads[0].abs().sum()) > 0


def test_fallback_is_one_line_with_the_reason(registry) -> None:
    from quantplug.quant.api import scheme_for
    from quantplug.quant.prepare import prepare

    recipe = QuantRecipe()
    with pytest.warns(UserWarning) as seen:
        q = prepare(Untraceable(), recipe, scheme_for(recipe, registry))
    messages = [str(w.message) for w in seen if "capture" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "no example inputs" in messages[0] and "float" in messages[0]
    assert q.quantplug_report.capture == "modules"


def test_cli_reports_what_runs_in_integer(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    import numpy as np

    torch.manual_seed(0)
    t = transformers
    t.ResNetForImageClassification(t.ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16],
                                                  depths=[1, 1], num_labels=10)).save_pretrained(tmp_path / "m")
    np.savez(tmp_path / "data.npz", pixel_values=np.random.default_rng(0).standard_normal((40, 1, 16, 16),
                                                                                          dtype=np.float32))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "QUANTPLUG_LOAD_PLUGINS": "",
           "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "quantplug", "quantize", "--model", f"hf:{tmp_path / 'm'}", "--data",
                        str(tmp_path / "data.npz"), "--method", "ptq", "--calib-batches", "2", "--calib-batch-size",
                        "8", "--output", str(out), "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["engine"]["capture"] == "execution" and m["engine"]["traced"] is False
    assert m["integer"]["integer_share"] >= 0.9 and m["integer"]["layers"]
    assert "in integer: " in r.stdout and "capture: execution" in r.stdout
    assert "could not capture" not in r.stderr


def test_multihead_attention_becomes_quantizable_layers_with_the_same_results(registry, tmp_path: Path) -> None:
    from quantplug.bench.zoo import Segmenter
    from quantplug.quant.modules import MultiheadAttention

    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 2, batch_first=batch_first).eval()
        x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)  # batch 2, 5 tokens
        pad = torch.zeros(2, 5, dtype=torch.bool)
        pad[0, 3:] = True
        for kwargs in ({}, {"key_padding_mask": pad}, {"need_weights": False}):
            a, b = mha(x, x, x, **kwargs), MultiheadAttention(mha).eval()(x, x, x, **kwargs)
            torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    model = Segmenter(width=8).eval()
    example = (torch.randn(2, 3, 32, 32),)
    q = _ptq(model, example, registry)
    assert {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj"} <= set(q.quantplug_report.layers)
    path = export_qdq(q, (example[0][:1],), tmp_path / "seg.onnx", registry=registry)
    coverage = integer_share(path, {"input": example[0].numpy()})
    projections = [layer for layer in coverage.layers if "proj" in layer.node and layer.integer]
    assert len(projections) >= 4 and coverage.share > 0.8


def test_zoo_rows_and_files(tmp_path: Path) -> None:
    import json

    from quantplug.bench.zoo import run_zoo, write_zoo

    rows = run_zoo(("segmenter",), batch=2, rounds=1, reps=1, calib_batches=2, progress=False)
    (row,) = rows
    assert row["model"] == "segmenter" and row["capture"] == "fx" and row["placement"] == "current"
    assert 0.8 < row["integer_share"] <= 1 and 0 < row["peer_integer_share"] <= 1
    assert 0 <= row["top1_agreement"] <= 100 and row["int8_over_fp32"] > 0 and row["peer_over_fp32"] > 0
    path = write_zoo(rows, tmp_path / "out", {"batch": 2})
    assert json.loads(path.read_text())["rows"] == rows
    assert "| segmenter | fx |" in (tmp_path / "out" / "zoo.md").read_text()
