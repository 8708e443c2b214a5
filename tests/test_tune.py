"""`quantplug tune` on the real mnist-cnn workload with the real engine, ONNX export and ONNX Runtime.

Budgets are kept small (few calibration batches, a small validation split) so the file runs in about a
minute; the targets on the full settings are measured separately (see the final report of issue 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import quantplug
from quantplug.decide.trials import Trial
from quantplug.decide.tune import StopSearch, TuneOptions, Tuner, summary
from quantplug.recipe import QuantRecipe

from .conftest import run_cli

LAYOUT = ("model.onnx", "model_fp32.onnx", "recipe.json", "metrics.json", "trials.json")


class ThirdPartyCalibrator:
    """A plugin's calibrator (registered through the real hook below): 90% of the observed range."""

    name = "thirdparty-90"
    description = "90% of the observed range"

    def compute_range(self, histogram: Any, bits: int, symmetric: bool) -> tuple[float, float]:
        low, high = 0.9 * min(float(histogram.min), 0.0), 0.9 * max(float(histogram.max), 0.0)
        if symmetric:
            bound = max(-low, high)
            return -bound, bound
        return low, high


class ThirdPartyPlugin:
    @quantplug.hookimpl
    def register_calibrators(self, register: Any) -> None:
        register(ThirdPartyCalibrator())


@pytest.fixture(scope="module")
def registry():
    from quantplug.plugins import get_plugin_manager
    from quantplug.registry import build_registry

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(ThirdPartyPlugin(), name="thirdparty")
    return build_registry(pm)


@pytest.fixture(scope="module")
def mnist(registry):
    workload = registry.workload("mnist-cnn")
    return workload.build_model(progress=False), workload


def small(**kw: Any) -> TuneOptions:
    base: dict[str, Any] = dict(max_drop=1.0, calib_batches=4, val_size=200, min_calib_samples=128,
                                sensitivity_calib_batches=2, progress=False)
    return TuneOptions(**{**base, **kw})


def test_ptq_within_budget_saves_best_after_every_trial(mnist, registry, tmp_path: Path) -> None:
    model, workload = mnist
    out = tmp_path / "tuned"
    seen: list[int] = []

    def after_trial(t: Trial) -> None:  # best-so-far files exist and match the best trial after EVERY trial
        seen.append(t.index)
        for name in ("model.onnx", "model_fp32.onnx", "recipe.json", "metrics.json", "trials.json"):
            assert (out / name).is_file(), name
        best = json.loads((out / "trials.json").read_text())["best"]
        saved = json.loads((out / "recipe.json").read_text())
        assert saved == tuner.trials[best - 1].recipe

    # calib_batches=2 x 32 is under min_calib_samples=128: thin calibration -> warning and 4 batches
    tuner = Tuner(model, workload, small(calib_batches=2), out, registry=registry, log=lambda m: None,
                  on_trial=after_trial)
    result = tuner.run()

    calibrators = registry.names("calibrators")
    assert "thirdparty-90" in calibrators  # plugins take part without tune knowing them
    assert seen == list(range(1, len(calibrators) + 1))
    assert result.stopped == "within budget"
    assert [t.stage for t in result.trials] == ["ptq"] * len(calibrators)
    assert {t.config.split()[0] for t in result.trials} == {f"ptq/{c}" for c in calibrators}
    assert any("thin calibration" in w for w in result.warnings)
    assert all(t.recipe["calib_batches"] == 4 for t in result.trials)
    winner = result.winner
    assert winner is not None and winner.within_budget and winner.score == max(t.score for t in result.trials)
    assert winner.size_bytes is not None and winner.size_bytes < result.fp32_size_bytes / 3
    assert "matches" in result.explanation and "PTQ" in result.explanation

    for name in LAYOUT:
        assert (out / name).is_file()
    assert QuantRecipe.load(out / "recipe.json").to_dict() == winner.recipe
    data = json.loads((out / "trials.json").read_text())
    assert data["winner"] == winner.index and data["winning_recipe"] == winner.recipe
    assert len(data["trials"]) == len(calibrators) and data["advice"]["choice"] == "ptq"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["workload"] == "mnist-cnn" and metrics["test_size"] == 1000
    assert metrics["method"] == "ptq" and metrics["calibrator"] == winner.recipe["calibrator"]
    assert metrics["sizes"]["model.onnx"] == (out / "model.onnx").stat().st_size
    # the held-out numbers come from the saved model.onnx under ONNX Runtime and stay close to FP32
    fp, q = metrics["fp32"]["onnxruntime"]["accuracy"], metrics["quantized"]["onnxruntime"]["accuracy"]
    assert fp > 95 and fp - q < 2.0 and data["test"]["drop"] == fp - q
    text = summary(result)
    assert "| #" in text and "ptq/" in text and "held-out test accuracy" in text


def test_output_folder_of_something_else_is_refused(mnist, registry, tmp_path: Path) -> None:
    from quantplug.errors import ConfigError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a quantplug output"):
        Tuner(*mnist, small(), tmp_path, registry=registry, log=lambda m: None)


def test_interrupt_keeps_the_best_so_far(mnist, registry, tmp_path: Path) -> None:
    model, workload = mnist

    def interrupt(t: Trial) -> None:
        if t.index == 2:
            raise KeyboardInterrupt

    tuner = Tuner(model, workload, small(), tmp_path, registry=registry, log=lambda m: None, on_trial=interrupt)
    with pytest.raises(KeyboardInterrupt):
        tuner.run()
    data = json.loads((tmp_path / "trials.json").read_text())
    assert data["stopped"] == "interrupted" and len(data["trials"]) == 2
    best = data["trials"][data["winner"] - 1]
    assert json.loads((tmp_path / "recipe.json").read_text()) == best["recipe"]
    assert (tmp_path / "model.onnx").stat().st_size > 0 and (tmp_path / "model_fp32.onnx").is_file()


def test_time_budget_stops_with_the_best_so_far(mnist, registry, tmp_path: Path) -> None:
    model, workload = mnist
    tuner = Tuner(model, workload, small(time_budget_min=30), tmp_path, registry=registry, log=lambda m: None)

    def spend_budget(t: Trial) -> None:
        tuner.deadline.seconds = 0.0  # the budget runs out right after the first trial

    tuner.on_trial = spend_budget
    result = tuner.run()
    assert result.stopped == "time budget"
    assert len(result.trials) == 1 and result.winner is result.trials[0]
    assert json.loads((tmp_path / "trials.json").read_text())["stopped"] == "time budget"
    assert json.loads((tmp_path / "recipe.json").read_text()) == result.winner.recipe


def test_fallback_keeps_the_most_sensitive_layer_at_int8(mnist, registry, tmp_path: Path) -> None:
    model, workload = mnist
    tuner = Tuner(model, workload, small(weight_bits=4), tmp_path, registry=registry, log=lambda m: None)
    tuner.setup()
    int4 = tuner.trial("ptq", "ptq/max int4", tuner._base_recipe().replace(calibrator="max"))
    int8 = tuner.trial("ptq", "ptq/max int8", tuner._base_recipe().replace(calibrator="max", weight_bits=8))
    with pytest.raises(StopSearch):  # the INT4 model is within 1 point already: the first fallback stops
        tuner.stage_fallback(int4)
    rows = tuner.sensitivity["int4"]
    module_names = {name for name, _ in model.named_modules()}
    assert len(rows) >= 3 and {r.layer for r in rows} <= module_names
    assert rows == sorted(rows, key=lambda r: (r.drop, r.output_error), reverse=True)
    fallback = tuner.trials[-1]
    assert fallback.stage == "fallback"
    assert fallback.recipe["layer_overrides"] == {rows[0].layer: {"fp": False, "weight_bits": 8,
                                                                  "activation_bits": None}}
    # INT4 < INT4 with one layer at INT8 < all INT8, and the note reports the size cost
    assert int4.size_bytes < fallback.size_bytes < int8.size_bytes
    assert rows[0].layer in fallback.note and "KiB" in fallback.note


@dataclass
class HotWorkload:
    """mnist-cnn, but claiming a training learning rate 1000x too high (a real way QAT diverges)."""

    inner: Any
    train_lr: float = 1.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_qat_divergence_is_retried_at_a_lower_learning_rate(mnist, registry, tmp_path: Path) -> None:
    model, workload = mnist
    tuner = Tuner(model, HotWorkload(workload), small(max_drop=0.5, qat_epochs=1, max_train_batches=5),
                  tmp_path, registry=registry, log=lambda m: None)
    tuner.setup()
    ptq = tuner.trial("ptq", "ptq/max int8", tuner._base_recipe().replace(calibrator="max"))
    try:
        tuner._train_with_retries("qat", "int8", QuantRecipe.from_dict(ptq.recipe), ptq.score)
    except StopSearch:
        pass
    qat = [t for t in tuner.trials if t.stage == "qat"]
    assert len(qat) >= 2, [t.to_dict() for t in qat]
    assert any("retrying at a lower learning rate" in w for w in tuner.warnings)
    assert [t.recipe["lr_scale"] for t in qat] == sorted((t.recipe["lr_scale"] for t in qat), reverse=True)
    assert qat[0].note.startswith("diverged") or qat[0].error


def test_cli_tune_writes_a_folder_repo_add_accepts(tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    result = run_cli("tune", "--workload", "mnist-cnn", "--max-drop", "1", "--calib-batches", "4",
                     "--val-size", "200", "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "| #" in result.stdout and "winner: trial" in result.stdout and "advise recommends PTQ" in result.stdout
    for name in LAYOUT:
        assert (out / name).is_file()
    repo = tmp_path / "repo"
    added = run_cli("repo", "add", "--from", str(out), "--name", "mnist", "--repository", str(repo))
    assert added.returncode == 0, added.stderr
    assert (repo / "mnist_int8" / "config.pbtxt").is_file()
