"""``tune``: reach an accuracy budget automatically, cheapest first.

1. PTQ with every registered calibration-only method and calibrator; keep the best.
2. Over budget: per-layer sensitivity, then the most sensitive layers fall back one at a time
   (INT4 -> INT8, then INT8 -> FP), each fallback's size cost reported.
3. Still over: quantization-aware training with labels (QAT) or distillation without (QAD), retried at
   a lower learning rate when it diverges.
4. Stop at the first configuration within budget, or at the time budget with the best so far.

Every decision uses a validation split carved from the training data; the held-out test set gives only
the final reported numbers. After every trial the best-so-far model and recipe are saved into the output
folder (shielded from Ctrl-C), in the layout of ``quantplug quantize --output`` plus ``trials.json``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import QuantplugError, TrainingDivergedError
from ..recipe import LayerOverride, QuantRecipe
from ..registry import Method, declared
from ..report.io import write_json_atomic
from . import _engine
from .advise import Situation, advise, infer_model_kind
from .data import DecisionData, predict
from .outcome import (
    COLLAPSE_POINTS,
    LR_RETRIES,
    StopSearch,
    TuneOptions,
    TuneResult,
    claim_output,
    explain,
    summary,
)
from .sensitivity import LayerSensitivity, analyse, model_size_bytes, quantized_layers
from .trials import BudgetExceeded, Deadline, Trial, better, shielded

__all__ = ["StopSearch", "TuneOptions", "TuneResult", "Tuner", "summary", "tune"]


class Tuner:
    """One tuning run over ``model`` and ``workload`` into ``output``."""

    def __init__(self, model: Any, workload: Any, options: TuneOptions, output: str | Path, *,
                 registry: Any = None, log: Callable[[str], None] = print,
                 on_trial: Callable[[Trial], None] | None = None) -> None:
        from ..registry import build_registry

        self.model = model.eval()
        self.workload = declared("workloads", workload)  # optional members read as their declared defaults
        self.opt = options
        self.output = Path(output)
        self.registry = registry or build_registry()
        self.log = log
        self.on_trial = on_trial  # called after each trial, once its best-so-far files are saved
        self._fp32_written = False
        self.metric = self.workload.metric
        self.trials: list[Trial] = []
        self.best: Trial | None = None
        self.warnings: list[str] = []
        self.sensitivity: dict[str, list[LayerSensitivity]] = {}
        self.deadline = Deadline(None if options.time_budget_min is None else options.time_budget_min * 60)
        self.has_labels = bool(self.workload.has_labels)
        self.fp_score = math.nan
        self.fp_size = 0
        self.calib_batches = options.calib_batches
        self.advice = advise(
            Situation(max_drop=options.max_drop, training_data=self.has_labels,
                      model_kind=infer_model_kind(model), weight_bits=options.weight_bits),
            model_args=("--workload", getattr(workload, "name", "?")), output=str(self.output))
        claim_output(self.output)

    # --- helpers --------------------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(f"warning: {message}")

    def _base_recipe(self) -> QuantRecipe:
        return QuantRecipe(method="ptq", target=self.opt.target, weight_bits=self.opt.weight_bits,
                           calib_batches=self.calib_batches, calib_batch_size=self.opt.calib_batch_size,
                           qat_epochs=self.opt.qat_epochs, seed=self.opt.seed)

    def _quantize(self, recipe: QuantRecipe, *, calib_batches: int | None = None, train: bool = False) -> Any:
        calib = self.data.calibration(calib_batches or recipe.calib_batches, recipe.calib_batch_size)

        def train_data(epoch: int) -> Any:
            return self.data.training_epoch(epoch, recipe.train_batch_size, self.opt.max_train_batches)

        return _engine.quantize(copy.deepcopy(self.model), recipe, calib, train_data if train else None,
                                workload=self.workload,
                                registry=self.registry, progress=self.opt.progress, quiet_thin=True)

    def _check_calibration(self) -> None:
        """Thin calibration: fewer than MIN_CALIB_SAMPLES inputs -> warn and take more batches."""
        bs = self.opt.calib_batch_size
        self.calib_batches = self.opt.calib_batches
        minimum = self.opt.min_calib_samples
        if self.calib_batches * bs >= minimum:
            return
        available = self.data.available_rows()
        wanted = math.ceil(min(minimum, available) / bs)
        if wanted > self.calib_batches:
            self._warn(f"thin calibration: {self.calib_batches} batches x {bs} = {self.calib_batches * bs} inputs "
                       f"give noisy ranges; using {wanted} batches ({wanted * bs} inputs)")
            self.calib_batches = wanted
        if available < minimum:
            self._warn(f"only {available} training inputs remain outside the validation split; ranges may be "
                       "noisy (add calibration data or lower --val-size)")

    # --- one trial ------------------------------------------------------------------------------------
    def trial(self, stage: str, config: str, recipe: QuantRecipe, *, train: bool = False, note: str = "",
              build: Callable[[], Any] | None = None) -> Trial:
        """Quantize with ``recipe`` (or take ``build()``'s model), score it on validation, save if best."""
        if self.deadline.expired:
            raise BudgetExceeded
        t = Trial(index=len(self.trials) + 1, stage=stage, config=config, recipe=recipe.to_dict(), note=note)
        started = time.perf_counter()
        self.trials.append(t)
        try:
            with self.deadline.armed():
                qmodel = build() if build is not None else self._quantize(recipe, train=train)
                t.score, t.output_error = self.data.evaluate(qmodel, self.targets, self.reference)
        except QuantplugError as e:
            t.error = f"{type(e).__name__}: {e}"
            t.seconds = time.perf_counter() - started
            self.log(f"[{t.index}] {config}: failed ({t.error})")
            self._save_trials()
            if isinstance(e, TrainingDivergedError):
                raise
            return t
        t.seconds = time.perf_counter() - started
        t.drop = self.fp_score - t.score
        t.within_budget = t.drop <= self.opt.max_drop
        t.size_bytes = model_size_bytes(qmodel)
        if self.opt.measure_speed:
            t.latency_ms = _engine.latency_ms(qmodel, self.workload)
        self.log(f"[{t.index}] {config}: val {self.metric} {t.score:.2f} (drop {t.drop:+.2f}), "
                 f"{t.size_bytes / 1024:.1f} KiB, {t.seconds:.1f}s{'  within budget' if t.within_budget else ''}")
        if better(t, self.best):
            self.best = t
            with shielded():
                _engine.write_artifacts(self.output, qmodel, self.model, recipe, self.workload,
                                        lambda: self._metrics(t),
                                        registry=self.registry, write_fp32=not self._fp32_written)
                self._fp32_written = True
        self._save_trials()
        if self.on_trial is not None:
            self.on_trial(t)
        return t

    def _metrics(self, t: Trial) -> dict[str, Any]:
        """metrics.json, with the keys ``quantplug quantize`` writes where they apply, plus the tuning."""
        r = t.recipe
        out: dict[str, Any] = {
            "workload": getattr(self.workload, "name", None), "metric": self.metric,
            "method": r["method"], "calibrator": r["calibrator"], "target": r["target"],
            "weight_bits": r["weight_bits"], "activation_bits": r["activation_bits"],
            "tune": {"trial": t.index, "config": t.config, "max_drop": self.opt.max_drop,
                     "validation": {"rows": self.data.val_rows, "source": self.data.source, "fp32": self.fp_score,
                                    "quantized": t.score, "drop": t.drop},
                     "estimated_weight_bytes": t.size_bytes, "fp32_weight_bytes": self.fp_size},
        }
        q, fp = self.output / "model.onnx", self.output / "model_fp32.onnx"
        if q.is_file() and fp.is_file():
            out["sizes"] = {"model.onnx": q.stat().st_size, "model_fp32.onnx": fp.stat().st_size,
                            "ratio": round(q.stat().st_size / fp.stat().st_size, 4)}
        return out

    def _save_trials(self, extra: dict[str, Any] | None = None) -> None:
        with shielded():
            write_json_atomic(self.output / "trials.json", {
                "max_drop": self.opt.max_drop, "metric": self.metric, "fp32_validation": self.fp_score,
                "best": self.best.index if self.best else None, **(extra or {}),
                "trials": [t.to_dict() for t in self.trials]})

    # --- the ladder -----------------------------------------------------------------------------------
    def _ptq_methods(self) -> list[Method]:
        """Methods that calibrate without training, those that share one histogram pass first, then by
        their declared cost."""
        cal_only = [m for m in self.registry.methods() if not m.needs_training_data and m.needs_calibration]
        return sorted(cal_only, key=lambda m: (not m.calibration_only, _rank(m), m.name))

    def stage_ptq(self) -> Trial | None:
        base = self._base_recipe()
        stage_best: Trial | None = None
        calibrators = self.registry.names("calibrators")
        for method in self._ptq_methods():
            shared: dict[str, Any] = {}
            if method.calibration_only:  # apply is context.calibrate: every calibrator from ONE histogram pass
                with self.deadline.armed():
                    started = time.perf_counter()
                    shared = _engine.compare_calibrators(self.model, base, self.data.calibration(
                        base.calib_batches, base.calib_batch_size), calibrators, registry=self.registry,
                        progress=self.opt.progress)
                    self.log(f"one histogram pass for {len(calibrators)} calibrators: "
                             f"{time.perf_counter() - started:.1f}s")
            for cal in calibrators:
                recipe = base.replace(method=method.name, calibrator=cal)
                build = (lambda m=shared[cal]: m) if cal in shared else None
                t = self.trial("ptq", f"{method.name}/{cal} int{self.opt.weight_bits}", recipe, build=build)
                if t.score is not None and (stage_best is None or t.score > (stage_best.score or -math.inf)):
                    stage_best = t
        if stage_best is not None and stage_best.within_budget:
            raise StopSearch
        return stage_best

    def stage_fallback(self, base_trial: Trial | None) -> list[Trial]:
        """Per-layer sensitivity, then fall the most sensitive layers back one at a time."""
        if base_trial is None:
            return []
        recipe = QuantRecipe.from_dict(base_trial.recipe)
        made: list[Trial] = []
        levels = [4, 8] if recipe.weight_bits == 4 else [8]
        overrides: dict[str, LayerOverride] = {}
        for bits in levels:
            level_base = recipe.replace(weight_bits=bits, granularity="per-channel",
                                        layer_overrides={k: asdict(v) for k, v in overrides.items()})
            rows = self._sensitivity(level_base)
            if not rows:
                continue
            previous = made[-1] if made else base_trial
            up = "int8" if bits == 4 else "fp32"
            for n, row in enumerate(rows, start=1):
                if bits == 8 and n >= len(rows):
                    break  # every layer in FP would be the FP32 model
                overrides[row.layer] = LayerOverride(weight_bits=8) if bits == 4 else LayerOverride(fp=True)
                r = level_base.replace(layer_overrides={k: asdict(v) for k, v in overrides.items()})
                fallen = [k for k, v in overrides.items() if (v.fp if bits == 8 else v.weight_bits == 8)]
                t = self.trial("fallback", f"int{bits}, {len(fallen)} layer(s) -> {up} (+{row.layer})", r,
                               note="")
                if t.size_bytes is not None and previous.size_bytes is not None:
                    t.note = (f"{row.layer} int{bits}->{up}: size {(t.size_bytes - previous.size_bytes) / 1024:+.1f}"
                              f" KiB")
                    if t.latency_ms is not None and previous.latency_ms is not None:
                        t.note += f", latency {t.latency_ms - previous.latency_ms:+.2f} ms"
                made.append(t)
                previous = t
                if t.within_budget:
                    self._save_trials()
                    raise StopSearch
            if bits == 4:  # every layer now at INT8: go on from plain INT8
                overrides = {}
        return made

    def _sensitivity(self, base: QuantRecipe) -> list[LayerSensitivity]:
        key = f"int{base.weight_bits}"
        self.log(f"sensitivity analysis ({key}, one layer at a time on the validation split)...")
        cb = min(self.opt.sensitivity_calib_batches, base.calib_batches)

        def quantize(model: Any, recipe: QuantRecipe) -> Any:
            return self._quantize(recipe.replace(layer_overrides={
                **{k: asdict(v) for k, v in base.layer_overrides.items()},
                **{k: asdict(v) for k, v in recipe.layer_overrides.items()}}), calib_batches=cb)

        layers = [name for name in quantized_layers(self._quantize(base, calib_batches=cb))
                  if name not in base.layer_overrides]
        with self.deadline.armed():
            rows = analyse(self.model, base.replace(layer_overrides={}), self.data, quantize,
                           fp_score=self.fp_score, targets=self.targets, layers=layers, progress=self.opt.progress)
        self.sensitivity[key] = rows
        for r in rows[:8]:
            self.log(f"  {r.layer:<30} {r.kind:<10} drop {r.drop:+.2f}")
        return rows

    def _training_methods(self) -> list[Method]:
        if not self.data.has_training:
            return []  # no training batches: QAT/QAD cannot run
        trainers = [m for m in self.registry.methods() if m.needs_training_data
                    and (self.has_labels or not m.needs_labels)]
        # Labelled data: QAT-like (label loss) first; otherwise distillation. Then by declared cost.
        return sorted(trainers, key=lambda m: (not m.needs_labels if self.has_labels else 0, _rank(m), m.name))

    def stage_train(self, ptq_best: Trial | None, fallbacks: list[Trial]) -> None:
        """QAT (labels) or QAD (no labels) from the best PTQ configuration, then from the last fallback."""
        bases: list[tuple[str, QuantRecipe, float | None]] = []
        if ptq_best is not None:
            bases.append((f"int{self.opt.weight_bits}", QuantRecipe.from_dict(ptq_best.recipe), ptq_best.score))
        if fallbacks and fallbacks[-1].score is not None:
            last = fallbacks[-1]
            bases.append((last.config.split(" (+")[0], QuantRecipe.from_dict(last.recipe), last.score))
        if not bases:
            bases.append((f"int{self.opt.weight_bits}", self._base_recipe(), None))
        for label, base, start in bases:
            for method in self._training_methods():
                self._train_with_retries(method.name, label, base, start)

    def _train_with_retries(self, method: str, label: str, base: QuantRecipe, start: float | None) -> None:
        """One training method; on divergence (an error, or a collapse far below the PTQ start) retry at
        a lower learning rate."""
        collapse = max(COLLAPSE_POINTS, 2 * self.opt.max_drop)
        for factor in LR_RETRIES:
            recipe = base.replace(method=method, qat_epochs=self.opt.qat_epochs,
                                  lr_scale=min(1.0, base.lr_scale * factor))
            config = f"{method} {self.opt.qat_epochs} ep, lr x{recipe.lr_scale:g}, {label}"
            try:
                t = self.trial(method, config, recipe, train=True)
            except TrainingDivergedError:
                self._warn(f"{method} diverged at lr_scale {recipe.lr_scale:g}; retrying at a lower learning rate")
                continue
            if t.score is not None and start is not None and t.score < start - collapse:
                t.note = f"diverged: {t.score:.2f} vs {start:.2f} after PTQ"
                self._save_trials()
                self._warn(f"{method} at lr_scale {recipe.lr_scale:g} collapsed to {t.score:.2f} (PTQ start "
                           f"{start:.2f}): treated as diverged; retrying at a lower learning rate")
                continue
            if t.within_budget:
                raise StopSearch
            return

    # --- the run --------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Carve the validation split and measure FP32 on it (the first step of :meth:`run`)."""
        with self.deadline.armed():
            self.data = DecisionData.carve(self.workload, self.opt.val_size, self.opt.calib_batch_size, self.opt.seed)
            self.targets = self.data.targets(self.model)
            self.reference = predict(self.model, self.data.val_inputs)
            self.fp_score = self.data.score(self.model, self.targets)
            self.fp_size = model_size_bytes(self.model)
        self.log(f"FP32 validation {self.metric}: {self.fp_score:.2f} on {self.data.val_rows} rows carved from "
                 f"the training data, {self.fp_size / 1024:.1f} KiB; budget: drop <= {self.opt.max_drop:g}")
        self._check_calibration()

    def run(self) -> TuneResult:
        stopped = "searched everything"
        interrupted: BaseException | None = None
        try:
            self.setup()
            ptq_best = self.stage_ptq()
            fallbacks = self.stage_fallback(ptq_best)
            self.stage_train(ptq_best, fallbacks)
        except StopSearch:
            stopped = "within budget"
        except BudgetExceeded:
            stopped = "time budget"
            if self.trials and self.trials[-1].score is None and not self.trials[-1].error:
                self.trials[-1].error = "stopped by the time budget"
        except KeyboardInterrupt as e:
            stopped = "interrupted"
            interrupted = e
        result = self._finish(stopped)
        if interrupted is not None:
            raise interrupted
        return result

    def _finish(self, stopped: str) -> TuneResult:
        winner = self.best
        test: dict[str, Any] = {}
        if winner is not None and stopped != "interrupted":
            has_test = getattr(self.workload, "has_test_set", lambda: True)()
            test = self._test_numbers(winner) if has_test and getattr(self.workload, "test_set", None) is not None else {}
            metrics = self._metrics(winner)
            if test:
                metrics.update({"fp32": {"onnxruntime": test["fp32_scores"]},
                                "quantized": {"onnxruntime": test["quantized_scores"]},
                                "test_size": test["rows"]})
            with shielded():
                write_json_atomic(self.output / "metrics.json", metrics)
        result = TuneResult(self.trials, winner, self.fp_score, self.metric, self.advice, explain(self.advice, self.trials, winner, self.opt.max_drop),
                            stopped, self.output, test, self.sensitivity, self.warnings, self.fp_size)
        with shielded():
            write_json_atomic(self.output / "trials.json", result.to_dict())
        return result

    def _test_numbers(self, winner: Trial) -> dict[str, Any]:
        """The held-out test metric of FP32 and of the saved winner (the only use of the test set)."""
        import torch

        inputs, targets = self.workload.test_set()
        names = list(getattr(self.workload, "input_names", list(inputs)))
        tensors = tuple(torch.as_tensor(inputs[n]) for n in names)
        if not self.has_labels:
            targets = predict(self.model, tensors)
        qmodel = _engine.load_saved(self.output)
        fp_scores = dict(self.workload.score(predict(self.model, tensors), targets))
        q_scores = dict(self.workload.score(predict(qmodel, tensors), targets))
        fp, q = float(fp_scores[self.metric]), float(q_scores[self.metric])
        return {"rows": int(tensors[0].shape[0]), "fp32": fp, "quantized": q, "drop": fp - q,
                "fp32_scores": fp_scores, "quantized_scores": q_scores, "evaluated_with": _engine.SAVED_EVALUATOR}


def _rank(method: Method) -> int:
    """A method's declared cost rank (one without a declared cost goes after those with one)."""
    return method.cost.rank if method.cost is not None else 99


def tune(model: Any, workload: Any, options: TuneOptions, output: str | Path, *, registry: Any = None,
         log: Callable[[str], None] = print) -> TuneResult:
    """Run the search; see the module docstring. Returns every trial, the winner and the explanation."""
    return Tuner(model, workload, options, output, registry=registry, log=log).run()
