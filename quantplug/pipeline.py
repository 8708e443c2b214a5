"""Quantize to a directory: the path the CLI (``quantplug quantize``) and the demo take.

``quantize_to_dir`` builds the FP32 model, quantizes it with the recipe, exports ``model.onnx`` (QDQ or
dynamic) and ``model_fp32.onnx``, measures FP32 and quantized quality in-process (PyTorch, fake quant)
and in ONNX Runtime on the held-out test set, and writes ``recipe.json`` and ``metrics.json``. Everything
goes to a temporary folder next to ``output_dir`` first and is renamed into place at the end, so a
failure leaves no partial output. ``on_stage`` hooks see each stage's wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, QuantplugError
from .recipe import QuantRecipe

__all__ = ["QuantizeResult", "quantize_to_dir", "predict_onnx", "predict_torch"]

OUTPUT_FILES = ("model.onnx", "model_fp32.onnx", "recipe.json", "metrics.json")


@dataclass
class QuantizeResult:
    output_dir: Path
    model_path: Path
    fp32_path: Path
    recipe: QuantRecipe
    metrics: dict[str, Any] = field(default_factory=dict)
    qmodel: Any = None


def predict_torch(model: Any, inputs: dict[str, np.ndarray], input_names: tuple[str, ...], batch: int = 256) -> np.ndarray:
    import torch

    from .quant.train import first_output

    n = len(next(iter(inputs.values())))
    outs = []
    with torch.no_grad():
        for s in range(0, n, batch):
            args = [torch.from_numpy(np.ascontiguousarray(inputs[k][s:s + batch])) for k in input_names]
            outs.append(first_output(model(*args)).float().numpy())
    return np.concatenate(outs)


def predict_onnx(path: Path, inputs: dict[str, np.ndarray], batch: int = 256, threads: int = 2) -> np.ndarray:
    from .export.bench import session

    sess = session(path, threads)
    names = [i.name for i in sess.get_inputs()]
    missing = [k for k in names if k not in inputs]
    if missing:
        raise ConfigError(f"the test set has no input(s) {missing}; the ONNX model expects {names}")
    n = len(inputs[names[0]])
    outs = []
    for s in range(0, n, batch):
        outs.append(sess.run(None, {k: np.ascontiguousarray(inputs[k][s:s + batch]) for k in names})[0])
    return np.concatenate(outs)


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists():
        if not output_dir.is_dir():
            raise ConfigError(f"output {output_dir} exists and is not a directory; choose another --output")
        contents = {p.name for p in output_dir.iterdir()}
        if contents and not contents & {"recipe.json", "metrics.json"}:
            raise ConfigError(f"output directory {output_dir} is not empty and is not a quantplug output; "
                              "choose a new --output directory")


def _emit(pm: Any, stage: str, seconds: float, info: dict[str, Any], stages: dict[str, float]) -> None:
    from .stages import emit

    stages[stage] = round(seconds, 3)
    emit(pm, stage, seconds, info)


def quantize_to_dir(source: Any, recipe: QuantRecipe, output_dir: str | os.PathLike[str], *,
                    registry: Any = None, pm: Any = None, progress: bool = True,
                    model: Any = None, evaluate: bool = True, allow_divergence: bool = False) -> QuantizeResult:
    """Quantize ``source`` (a workload, e.g. ``registry.workload("mnist-cnn")`` or a
    :class:`quantplug.user.UserWorkload`) with ``recipe`` into ``output_dir``.

    ``model`` overrides ``source.build_model(seed=recipe.seed)``. Returns the paths and metrics.
    With a test set, the parity of ONNX Runtime with the fake-quant model is checked
    (:mod:`quantplug.parity`, into ``metrics["parity"]``); a divergence beyond its tolerance raises
    :class:`~quantplug.errors.ParityError` naming the first divergent layer and writes nothing, unless
    ``allow_divergence``.
    """
    from . import quantize
    from .cpu import resolve_cpu
    from .export import export_fp32, export_quantized
    from .plugins import get_plugin_manager
    from .registry import build_registry

    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    recipe = recipe.replace(cpu=resolve_cpu(recipe.cpu))  # recipe.json names the CPU the model is exact on
    if pm is None and registry is None:
        pm = get_plugin_manager()
    registry = registry or build_registry(pm)
    registry.method(recipe.method)
    registry.calibrator(recipe.calibrator)
    registry.backend(recipe.target)
    stages: dict[str, float] = {}
    info: dict[str, Any] = {"recipe": recipe.to_dict(), "workload": getattr(source, "name", None)}
    started = time.perf_counter()

    t = time.perf_counter()
    fp_model = model if model is not None else source.build_model(seed=recipe.seed, progress=progress)
    fp_model.eval()
    _emit(pm, "prepare", time.perf_counter() - t, info, stages)

    t = time.perf_counter()
    qmodel = quantize(fp_model, recipe, None, workload=source, registry=registry, progress=progress)
    quantize_seconds = time.perf_counter() - t
    _emit(pm, "method", quantize_seconds, info, stages)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        t = time.perf_counter()
        example = source.example_inputs(1) if hasattr(source, "example_inputs") else None
        if example is None:
            raise ConfigError("the workload has no example_inputs(); cannot export")
        ins = tuple(getattr(source, "input_names", ("input",)))
        outs = tuple(getattr(source, "output_names", ("output",)))
        fp32_path = export_fp32(fp_model, example, tmp / "model_fp32.onnx", ins, outs)
        model_path = export_quantized(qmodel, example, tmp / "model.onnx", recipe.target, ins, outs,
                                      registry=registry)
        _emit(pm, "export", time.perf_counter() - t, {**info, "path": str(output_dir / "model.onnx")}, stages)

        metrics: dict[str, Any] = {
            "workload": getattr(source, "name", None),
            "method": recipe.method, "calibrator": recipe.calibrator, "target": recipe.target,
            "weight_bits": recipe.weight_bits, "activation_bits": recipe.activation_bits,
            "metric": getattr(source, "metric", None),
        }
        if evaluate and (getattr(source, "has_test_set", lambda: True)()) and getattr(source, "test_set", None) is not None:
            t = time.perf_counter()
            metrics.update(_evaluate(source, fp_model, qmodel, fp32_path, model_path, ins))
            _emit(pm, "evaluate", time.perf_counter() - t, info, stages)
            parity = metrics.get("parity")
            if parity is not None and not parity["ok"] and not allow_divergence:
                from .errors import ParityError

                raise ParityError(f"{parity['message']}; nothing was written (pass --allow-divergence to keep it)")
        size_q, size_fp = model_path.stat().st_size, fp32_path.stat().st_size
        report = getattr(qmodel, "quantplug_report", None)
        log = getattr(qmodel, "quantplug_log", {})
        metrics.update({
            "sizes": {"model.onnx": size_q, "model_fp32.onnx": size_fp, "ratio": round(size_q / size_fp, 4)},
            "quantize_seconds": round(quantize_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
            "stages": stages,
            "engine": {
                "traced": getattr(report, "traced", None),
                "folded_batchnorms": len(getattr(report, "folded_bn", []) or []),
                "quantized_layers": dict(getattr(report, "layers", {}) or {}),
                "fp_layers": list(getattr(report, "fp_layers", []) or []),
                "activation_quantizers": len(getattr(report, "activations", []) or []),
                "capture": getattr(report, "capture", None),
                "capture_error": getattr(report, "capture_error", None),
                "attention_matmuls": getattr(report, "attention_matmuls", 0),
            },
            "integer": _integer_share(model_path, example, ins),
            "train": {k: v for k, v in log.items() if k in ("train_loss", "train_lr")},
            "method_log": json.loads(json.dumps(log, default=str)),  # what the method put in context.log
        })
        recipe.save(tmp / "recipe.json")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return QuantizeResult(output_dir, output_dir / "model.onnx", output_dir / "model_fp32.onnx", recipe, metrics,
                          qmodel)


def _evaluate(source: Any, fp_model: Any, qmodel: Any, fp32_path: Path, model_path: Path,
              ins: tuple[str, ...]) -> dict[str, Any]:
    try:
        inputs, targets = source.test_set()
        out_fp_t = predict_torch(fp_model, inputs, ins)
        out_q_t = predict_torch(qmodel, inputs, ins)
        out_fp_o = predict_onnx(fp32_path, inputs)
        out_q_o = predict_onnx(model_path, inputs)
        from .parity import check_parity

        parity = check_parity(qmodel, model_path, inputs, ins, torch_out=out_q_t, runtime_out=out_q_o,
                              fp32_out=out_fp_t)
    except QuantplugError:
        raise
    except Exception as e:
        raise ConfigError(f"evaluating on the test set failed: {type(e).__name__}: {e}; the test set must match "
                          "the model's inputs") from e
    return {
        "fp32": {"torch": source.score(out_fp_t, targets), "onnxruntime": source.score(out_fp_o, targets)},
        "quantized": {"torch": source.score(out_q_t, targets), "onnxruntime": source.score(out_q_o, targets)},
        "onnxruntime_vs_torch_max_abs_diff": float(np.abs(out_q_o - out_q_t).max()),
        "parity": {**parity.to_dict(), "message": "" if parity.ok else parity.message()},
        "test_size": int(len(targets)),
    }


def _integer_share(model_path: Path, example: Any, ins: tuple[str, ...]) -> dict[str, Any]:
    """What ONNX Runtime really runs in integer (quantplug.export.coverage), on the example inputs."""
    from .export.coverage import integer_share

    try:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(ins, example, strict=False)}
        return integer_share(model_path, feeds).to_dict()
    except Exception as e:  # a report, never a reason to lose the model
        return {"error": f"{type(e).__name__}: {e}"}


def _replace_dir(tmp: Path, output_dir: Path) -> None:
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        os.replace(output_dir, old)
        os.replace(tmp, output_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output_dir)
