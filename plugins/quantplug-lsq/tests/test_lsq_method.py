"""quantplug-lsq: found through its entry point, the paper's gradients, exact write-back of the learned
steps, exported QDQ ONNX that ONNX Runtime runs like PyTorch, and ``quantplug quantize`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from quantplug_lsq import gradient_scale, learned_steps, lsq_fake_quant
from torch import nn

import quantplug
from quantplug import QuantRecipe
from quantplug.errors import ConfigError
from quantplug.export import export_qdq
from quantplug.quant.prepare import act_quantizers, weight_layers

REPO = Path(__file__).resolve().parents[3]  # the workloads cache their trained weights under the repo root


@pytest.fixture(scope="module")
def registry() -> quantplug.Registry:
    # With entry points: the method must be found the way users find it, through the installed distribution.
    return quantplug.build_registry()


class SmallNet(nn.Module):
    """Conv-BN-ReLU, a residual add, max-pool and a linear head on 1x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.c2(y) + y)
        return self.fc(torch.flatten(nn.functional.max_pool2d(y, 2), 1))


def _quantize(model: nn.Module, registry: quantplug.Registry, data: list, **kw) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few calibration batches warn, by design
        return quantplug.quantize(model, QuantRecipe(**{"calib_batches": 4, **kw}), data, registry=registry,
                                  progress=False)


def _assert_same_but_ties(a: np.ndarray, b: np.ndarray, fraction: float = 0.05) -> None:
    """Equal outputs, except where an intermediate value sat exactly on a rounding tie: torch's fake-quant
    kernel fuses multiply-add, so about 1 value in 1e5 rounds one step the other way (and ONNX Runtime
    then agrees with LSQ's unfused arithmetic). Wrong scales would change nearly every output."""
    diff = np.abs(a - b)
    assert (diff > 1e-5).mean() < fraction and diff.max() < 1e-2, ((diff > 1e-5).mean(), diff.max())


def test_registered_through_its_entry_point() -> None:
    env = {k: v for k, v in os.environ.items() if k != "QUANTPLUG_LOAD_PLUGINS"}
    r = subprocess.run([sys.executable, "-m", "quantplug", "plugins", "--json"], capture_output=True, text=True,
                       env=env, timeout=120, check=True)
    entries = [e for e in json.loads(r.stdout) if "lsq" in e["methods"]]
    assert len(entries) == 1, entries
    assert entries[0]["distribution"] == "quantplug-lsq" and not entries[0]["builtin"]
    assert entries[0]["hooks"] == ["register_methods"]


def test_forward_and_step_gradient_are_the_papers() -> None:
    x = torch.tensor([-3.0, -0.74, -0.2, 0.1, 0.26, 0.9, 2.5], requires_grad=True)
    step = torch.tensor(0.5, requires_grad=True)
    qn, qp, g = -4, 3, 0.25
    out = lsq_fake_quant(x, step, qn, qp, g)
    v = x.detach() / 0.5
    assert torch.equal(out.detach(), torch.clamp(v, qn, qp).round() * 0.5)
    shifted = lsq_fake_quant(x.detach(), step.detach(), 0, 7, g, zero_point=4)  # z=4: the same grid
    assert torch.equal(shifted, out.detach())
    out.sum().backward()
    inside = (v > qn) & (v < qp)
    # Esser et al., eq. 3: round(v) - v inside the range, Qn / Qp outside; times the gradient scale g.
    expected = torch.where(inside, v.round() - v, torch.where(v <= qn, float(qn), float(qp))).sum() * g
    assert step.grad is not None and torch.allclose(step.grad, expected)
    assert x.grad is not None and torch.equal(x.grad, inside.float())  # straight-through inside, 0 outside
    assert gradient_scale(100, 127) == pytest.approx(1 / (100 * 127) ** 0.5)


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_learned_steps_are_written_back_exported_and_run_alike_in_onnxruntime(
        registry: quantplug.Registry, target: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallNet().eval()
    data = [torch.randn(16, 1, 8, 8) for _ in range(4)]
    q = _quantize(model, registry, data, target=target)
    zero_points = [int(a.zero_point) for a in act_quantizers(q)]
    calibrated = [float(a.scale) for a in act_quantizers(q)]
    x = torch.randn(64, 1, 8, 8)
    with learned_steps(q) as steps:
        lsq_params = [p for n, p in q.named_parameters() if n.startswith("lsq_steps.")]
        assert len(lsq_params) == len(act_quantizers(q)) + len(weight_layers(q))
        with torch.no_grad():  # stand-in for training: move every step by up to ~10%
            for p in lsq_params:
                p.add_(0.01 * torch.randn_like(p))
            lsq_out = q(x)
    assert not [n for n, _ in q.named_parameters() if "lsq" in n] and not hasattr(q, "lsq_steps")
    learned = [float(a.scale) for a in act_quantizers(q)]
    assert all(abs(a / b - 1) > 1e-4 for a, b in zip(learned, calibrated, strict=True))
    assert [int(a.zero_point) for a in act_quantizers(q)] == zero_points  # zero points stay calibrated
    if target == "tensorrt":
        assert set(zero_points) == {0}  # INT8 symmetric
    else:
        assert all(0 <= z <= 255 for z in zero_points) and zero_points[0] > 0  # UINT8 asymmetric input
    with torch.no_grad():
        engine_out = q(x)
    # The engine's forward with the written-back steps is LSQ's forward.
    _assert_same_but_ties(engine_out.numpy(), lsq_out.numpy())
    assert steps.summary()["weight_steps"]["count"] == sum(int(m.weight.shape[0]) for m in weight_layers(q))

    import onnx
    import onnxruntime as ort

    path = export_qdq(q, (x[:1],), tmp_path / "lsq.onnx", target, ["input"], ["logits"], registry=registry)
    graph = onnx.load(path).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    exported = sorted(float(inits[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear")
    np.testing.assert_allclose(exported, sorted(learned), rtol=1e-6)  # the learned steps, not the calibrated
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # For tensorrt the engine keeps float biases and ONNX Runtime runs the symmetric QDQ graph in float, so
    # even the engine's own PTQ differs from ONNX Runtime on about 17% of this net's outputs (by <= 0.004).
    fraction = 0.05 if target == "onnxruntime" else 0.4
    _assert_same_but_ties(sess.run(None, {"input": x.numpy()})[0], engine_out.numpy(), fraction)


def test_bad_settings_are_one_line_config_errors(registry: quantplug.Registry) -> None:
    model = SmallNet().eval()
    data = [torch.randn(4, 1, 8, 8)]
    train = [((x,), torch.zeros(4, dtype=torch.long)) for x in data]
    for extra, message in [({"lsq_init": "zeros"}, "lsq_init='zeros' is not valid"),
                           ({"lsq_step_rate": -1}, "lsq_step_rate=-1 is not valid")]:
        with pytest.raises(ConfigError, match=message):
            quantplug.quantize(model, QuantRecipe(method="lsq", extra=extra), data, train, registry=registry,
                               progress=False)
    with pytest.raises(ConfigError, match="needs labelled training data"):
        _quantize(model, registry, data, method="lsq", qat_epochs=1) if False else quantplug.quantize(
            model, QuantRecipe(method="lsq", calib_batches=1), data, [((data[0],), None)], registry=registry,
            progress=False)


@pytest.mark.slow
def test_quantize_cli_end_to_end_on_real_mnist(tmp_path: Path) -> None:
    out = tmp_path / "mnist-lsq"
    env = {k: v for k, v in os.environ.items() if k != "QUANTPLUG_LOAD_PLUGINS"}
    r = subprocess.run([sys.executable, "-m", "quantplug", "quantize", "--workload", "mnist-cnn", "--method", "lsq",
                        "--epochs", "1", "--calib-batches", "8", "--output", str(out), "--quiet"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model_fp32.onnx", "recipe.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "lsq" and json.loads((out / "recipe.json").read_text())["method"] == "lsq"
    fp32 = metrics["fp32"]["onnxruntime"]["accuracy"]
    int8 = metrics["quantized"]["onnxruntime"]["accuracy"]
    assert int8 >= fp32 - 0.5, (fp32, int8)  # 1,000 real held-out MNIST digits, served by ONNX Runtime
    assert abs(metrics["quantized"]["torch"]["accuracy"] - int8) <= 0.1  # at most one image differs
    assert len(metrics["train"]["train_loss"]["lsq"]) == 1
