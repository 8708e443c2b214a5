"""The torch engine: BN folding, quantizer placement in the target's scheme, overrides, STE."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import fx

import quantplug
from quantplug import QuantRecipe
from quantplug.quant.modules import QuantConv2d, QuantLinear
from quantplug.quant.prepare import act_quantizers, prepare
from quantplug.quant.quantizer import ActQuantizer, WeightQuantizer
from tests.quant_models import MLP, Untraceable, batches, randomize_bn, tiny_resnet


@pytest.fixture(scope="module")
def registry():
    return quantplug.build_registry(quantplug.get_plugin_manager(load_entrypoints=False))


def _scheme(registry, target: str):
    return registry.backend(target).scheme


def _off(model: torch.nn.Module) -> None:
    for q in act_quantizers(model):
        q.mode = "off"
    for m in model.modules():
        if isinstance(m, QuantConv2d | QuantLinear):
            m.weight_quant.enabled = False


@pytest.mark.parametrize("model_fn", [lambda: tiny_resnet(0), lambda: randomize_bn(Untraceable())])
def test_bn_folding_keeps_the_fp32_function(registry, model_fn) -> None:
    model = model_fn()
    x = batches(1)[0]
    prepared = prepare(model, QuantRecipe(), _scheme(registry, "onnxruntime"), (x,))
    report = prepared.quantplug_report
    assert len(report.folded_bn) == 3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
    _off(prepared)
    torch.testing.assert_close(prepared(x), model(x), rtol=1e-4, atol=1e-5)
    assert model.stem[1].__class__ is torch.nn.BatchNorm2d  # the input model is untouched


def _quantized_tensors(gm: fx.GraphModule) -> set[str]:
    return {q.qname for q in act_quantizers(gm)}


def test_onnxruntime_placement_quantizes_inputs_outputs_and_the_residual(registry) -> None:
    for inline in (False, True):
        q = prepare(tiny_resnet(0, inline_add=inline), QuantRecipe(), _scheme(registry, "onnxruntime"),
                    (batches(1)[0],))
        assert q.quantplug_report.traced
        names = _quantized_tensors(q)
        # model input, stem output after ReLU (max-pool shares it), block conv1 output after ReLU,
        # conv2 output, the add output after ReLU, the flattened pool output feeding fc: one quantizer each.
        assert len(names) == 6, names
        qs = act_quantizers(q)
        assert all(a.dtype == "uint8" and not a.symmetric for a in qs)
        # the max-pool output reuses the stem's quantizer (same module called twice)
        calls = [n.target for n in q.graph.nodes if n.op == "call_module" and str(n.target).startswith("act_quant")]
        assert len(calls) == 7 and len(set(calls)) == 6


def test_tensorrt_placement_is_symmetric_int8_and_inputs_only(registry) -> None:
    q = prepare(tiny_resnet(0), QuantRecipe(target="tensorrt"), _scheme(registry, "tensorrt"), (batches(1)[0],))
    qs = act_quantizers(q)
    assert all(a.dtype == "int8" and a.symmetric for a in qs)
    # input, block input (conv1 input and the identity branch), conv2 input, conv2 output (add input), fc input
    assert len(qs) == 5


def test_untraceable_model_is_captured_by_execution_with_the_traced_placement(registry) -> None:
    scheme = _scheme(registry, "onnxruntime")
    q = prepare(randomize_bn(Untraceable()), QuantRecipe(), scheme, (batches(1)[0],))
    report = q.quantplug_report
    assert not report.traced and report.trace_error and report.capture == "execution"
    assert len(act_quantizers(q)) == len(act_quantizers(prepare(tiny_resnet(0), QuantRecipe(), scheme,
                                                                (batches(1)[0],)))) == 6


def test_untraceable_model_without_example_inputs_falls_back_to_module_quantizers(registry) -> None:
    with pytest.warns(UserWarning, match=r"could not capture Untraceable's graph \(no example inputs"):
        q = prepare(randomize_bn(Untraceable()), QuantRecipe(), _scheme(registry, "onnxruntime"))
    assert q.quantplug_report.capture == "modules"
    names = _quantized_tensors(q)
    # outputs too: the runtime's integer convs need Q after them (DQ -> Conv -> Q), so never slower than FP32
    assert {"block.add.a", "block.add.b", "block.add.output", "fc.input", "stem.0.input", "stem.0.output",
            "block.c1.output"} <= names


def test_layer_overrides_fp_and_bits(registry) -> None:
    recipe = QuantRecipe(weight_bits=4, layer_overrides={"stem.0": {"fp": True}, "block.*": {"weight_bits": 8}})
    q = prepare(tiny_resnet(0), recipe, _scheme(registry, "onnxruntime"), (batches(1)[0],))
    report = q.quantplug_report
    assert report.fp_layers == ["stem.0"]
    assert report.layers == {"block.c1": 8, "block.c2": 8, "fc": 4}
    assert type(q.get_submodule("stem.0")) is torch.nn.Conv2d


def test_per_group_int4_for_linear_layers(registry) -> None:
    recipe = QuantRecipe(weight_bits=4, granularity="per-group", group_size=16)
    q = prepare(MLP(), recipe, _scheme(registry, "onnxruntime"))
    wq = q.get_submodule("f1").weight_quant
    assert wq.group_size == 16 and wq.clip_ratio.numel() == 64 * 64 // 16


def test_fake_quant_values_and_straight_through_gradient() -> None:
    wq = WeightQuantizer(bits=4, out_channels=3)
    w = torch.randn(3, 20, requires_grad=True)
    out = wq(w)
    scale = w.detach().abs().amax(1) / 7
    levels = out.detach() / scale[:, None]
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert levels.abs().max() <= 7 + 1e-4
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))  # STE: identity inside the range

    aq = ActQuantizer("x", "uint8", symmetric=False)
    aq.set_range(-1.0, 3.0)
    assert int(aq.zero_point) == round(255 / 4) and abs(float(aq.scale) - 4 / 255) < 1e-7
    x = torch.tensor([-5.0, 0.0, 1.0, 10.0], requires_grad=True)
    y = aq(x)
    yd = y.detach()
    assert float(yd[0]) == pytest.approx(-1.0, abs=float(aq.scale)) and float(yd[3]) == pytest.approx(3.0, abs=0.02)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # clipped values get no gradient


def test_quantize_returns_a_calibrated_model_close_to_fp32(registry) -> None:
    model = tiny_resnet(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantplug.quantize(model, QuantRecipe(calib_batches=8), batches(8), registry=registry, progress=False)
    assert all(a.mode == "quant" for a in act_quantizers(q))
    x = batches(1, seed=5)[0]
    ref = model(x)
    err = (q(x) - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05


class _TwoBranches(torch.nn.Module):
    """Two conv branches of different ranges, concatenated, then a conv: an inception-style join."""

    def __init__(self, traceable: bool = True) -> None:
        super().__init__()
        from quantplug import nn as qnn

        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.join = torch.nn.Conv2d(8, 2, 1)
        self.cat = None if traceable else qnn.Concat(dim=1)
        with torch.no_grad():
            self.b.weight.mul_(5.0)  # the branches' ranges differ by about 5x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.relu(self.a(x)), self.b(x)
        if self.cat is None:
            return self.join(torch.cat([a, b], dim=1))
        if x.shape[0] < 0:  # data-dependent control flow: fx cannot trace this model
            return a
        return self.join(self.cat(a, b))


@pytest.mark.parametrize("traceable", [True, False])
def test_concat_inputs_share_one_scale_in_the_exported_graph(registry, tmp_path, traceable: bool) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from quantplug.export import export_qdq

    torch.manual_seed(0)
    model = _TwoBranches(traceable).eval()
    data = batches(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantplug.quantize(model, QuantRecipe(target="tensorrt", calib_batches=8), data, registry=registry,
                               progress=False)
    assert q.quantplug_report.traced is traceable
    path = export_qdq(q, (data[0][:1],), tmp_path / "cat.onnx", "tensorrt", ["input"], ["out"], registry=registry)
    graph = onnx.load(path).graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    cat = next(n for n in graph.node if n.op_type == "Concat")
    scales = []
    for name in cat.input:  # each concat input: DQ(Q(x)) with a per-tensor scale
        dq = producer[name]
        assert dq.op_type == "DequantizeLinear" and producer[dq.input[0]].op_type == "QuantizeLinear"
        scales.append(float(inits[dq.input[1]]))
    assert len(scales) == 2 and scales[0] == scales[1] > 0  # TensorRT's rule: equal scales into a concat
    # and the shared scale covers the wider branch (calibrated on both), not only the first one
    with torch.no_grad():
        wide = float(torch.cat([model.b(x) for x in data]).abs().max())
    assert scales[0] * 127 >= 0.5 * wide and np.isfinite(scales[0])
