"""The built-in methods: registered as plugins; QAT and QAD train and stay in the scheme; divergence stops."""

from __future__ import annotations

import warnings

import pytest
import torch

import quantplug
from quantplug import QuantRecipe
from quantplug.errors import ConfigError, TrainingDivergedError
from quantplug.quant.prepare import act_quantizers
from tests.quant_models import MLP, labelled


@pytest.fixture(scope="module")
def registry():
    return quantplug.build_registry(quantplug.get_plugin_manager(load_entrypoints=False))


def test_methods_are_plugins_declaring_their_data_needs(registry) -> None:
    assert {"ptq", "qat", "qad", "dynamic"} <= set(registry.names("methods"))
    assert registry.plugin_of("methods", "qat") == "quantplug.builtin.methods"
    qat, qad, ptq = registry.method("qat"), registry.method("qad"), registry.method("ptq")
    assert qat.needs_training_data and qat.needs_labels
    assert qad.needs_training_data and not qad.needs_labels
    assert not ptq.needs_training_data


def _accuracy(model, data) -> float:
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for (x,), y in data)
    return hits / sum(len(y) for _, y in data)


def _quantize(model, registry, method, train, **kw):
    recipe = QuantRecipe(method=method, weight_bits=4, calib_batches=4, qat_epochs=2, train_batch_size=16, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantplug.quantize(model, recipe, [x for (x,), _ in train[:4]], train, registry=registry,
                                  progress=False, train_lr=1e-2)


@pytest.mark.parametrize("method", ["qat", "qad"])
def test_training_methods_lower_the_loss_and_keep_fixed_activation_ranges(registry, method) -> None:
    torch.manual_seed(0)
    model = MLP()
    train = labelled(30)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # a briefly trained FP32 model
        for (x,), y in train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    ptq = _quantize(model, registry, "ptq", train)
    trained = _quantize(model, registry, method, train)
    losses = trained.quantplug_log["train_loss"][method]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert [float(a.scale) for a in act_quantizers(trained)] == [float(a.scale) for a in act_quantizers(ptq)]
    test = labelled(10, seed=7)
    assert _accuracy(trained, test) >= _accuracy(ptq, test) - 0.02


def test_qad_works_without_labels(registry) -> None:
    model = MLP().eval()
    unlabelled = [((x,), None) for (x,), _ in labelled(10)]
    q = _quantize(model, registry, "qad", unlabelled)
    assert q.quantplug_log["train_loss"]["qad"][0] > 0
    with pytest.raises(ConfigError, match="labelled"):
        _quantize(model, registry, "qat", unlabelled)


class _DropMLP(MLP):
    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.drop(x))


@pytest.mark.parametrize("keep", [False, True])
def test_dropout_is_off_while_fine_tuning_unless_asked(registry, monkeypatch, keep: bool) -> None:
    seen: list[float] = []
    forward = torch.nn.Dropout.forward

    def spy(self: torch.nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            seen.append(self.p)
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Dropout, "forward", spy)
    torch.manual_seed(0)
    train = labelled(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantplug.quantize(_DropMLP().eval(), QuantRecipe(method="qat", qat_epochs=1, calib_batches=4,
                                                              train_dropout=keep),
                               [x for (x,), _ in train[:4]], train, registry=registry, progress=False)
    assert len(seen) == len(train) and set(seen) == {0.5 if keep else 0.0}
    drops = [m for m in q.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.5 for m in drops)  # restored after training


def test_divergence_stops_with_a_clear_message(registry) -> None:
    calls = []

    def exploding(out, labels):  # the task loss turns NaN on the 6th step, as a diverging run's would
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(out, labels)
        return loss * float("nan") if len(calls) == 6 else loss

    train = labelled(10)
    recipe = QuantRecipe(method="qat", calib_batches=4, qat_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingDivergedError, match=r"qat diverged at epoch 1 step 6: the loss became nan"):
            quantplug.quantize(MLP().eval(), recipe, [x for (x,), _ in train[:4]], train, registry=registry,
                               progress=False, loss_fn=exploding)


def test_rising_loss_is_divergence() -> None:
    from quantplug.quant.train import DivergenceMonitor

    mon = DivergenceMonitor("qat", window=2, patience=3)
    with pytest.raises(TrainingDivergedError, match="rose for 3 consecutive checks"):
        for step, loss in enumerate([1, 1, 1.2, 1.2, 1.5, 1.5, 2, 2, 3, 3]):
            mon.update(loss, 0, step)


def test_training_method_without_data_is_a_config_error(registry) -> None:
    with pytest.raises(ConfigError, match="training data"):
        quantplug.quantize(MLP(), QuantRecipe(method="qat"), [torch.randn(2, 64)], registry=registry, progress=False)


def test_dynamic_rejects_tensorrt(registry) -> None:
    with pytest.raises(ConfigError, match="onnxruntime"):
        quantplug.quantize(MLP(), QuantRecipe(method="dynamic", target="tensorrt"), None, registry=registry)
