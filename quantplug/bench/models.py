"""Build a workload's benchmark models: FP32, quantplug's INT8 variant(s), and the peer.

Each quantplug model is a ``quantize_to_dir`` output folder (``model.onnx``, ``model_fp32.onnx``,
``recipe.json``, ``metrics.json``). The peer is ONNX Runtime's own ``quantize_static`` (QDQ, UINT8
activations, INT8 per-channel weights) of the same FP32 ONNX, calibrated on exactly the batches the
engine calibrated on. With calibrator ``auto``, every registered calibrator is tried from one histogram
pass and the one whose outputs stay closest to FP32 (mean cosine) on a validation split drawn from the
training data wins (and is exported in the same folder layout); the held-out test set is never used to
choose.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import QuantplugError
from ..recipe import QuantRecipe
from ..report import write_json_atomic
from .config import AUTO, BenchConfig, Variant

__all__ = ["BuiltModels", "build_models", "calibration_feeds", "output_cosine"]

SELECT_SEED_OFFSET = 7919  # validation batches for calibrator selection: another stream of the training split
PEER_TOOL = "onnxruntime.quantization.quantize_static"


@dataclass
class BuiltModels:
    """Paths of every model of one workload (keys ``fp32``, the variant keys, ``peer``) and their details."""

    paths: dict[str, Path]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibrator_selection: dict[str, Any] | None = None


def _recipe(cfg: BenchConfig, method: str, calibrator: str, cpu: str = "auto") -> QuantRecipe:
    return QuantRecipe(method=method, calibrator=calibrator, target="onnxruntime", calib_batches=cfg.calib_batches,
                       calib_batch_size=cfg.calib_batch_size, seed=0, cpu=cpu)


def _as_numpy(batch: Any) -> tuple[np.ndarray, ...]:
    items = batch if isinstance(batch, (tuple, list)) else (batch,)
    return tuple(np.ascontiguousarray(t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t))
                 for t in items)


def calibration_feeds(workload: Any, recipe: QuantRecipe) -> list[dict[str, np.ndarray]]:
    """The batches the engine calibrates on for ``recipe`` (the first ``calib_batches`` of the workload's
    ``calibration_batches(calib_batch_size, seed)``), as ONNX feeds keyed by input name."""
    names = tuple(workload.input_names)
    batches = itertools.islice(workload.calibration_batches(recipe.calib_batch_size, seed=recipe.seed),
                               recipe.calib_batches)
    return [dict(zip(names, _as_numpy(b), strict=True)) for b in batches]


def output_cosine(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Mean row-wise cosine similarity of two output arrays (rows flattened)."""
    a = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    b = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    num = np.sum(a * b, axis=1)
    den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(np.mean(num / den))


def _write_output(folder: Path, qmodel: Any, fp_model: Any, recipe: QuantRecipe, workload: Any, registry: Any,
                  extra: dict[str, Any]) -> dict[str, Any]:
    """``folder`` in the layout of ``quantplug quantize --output`` (``model.onnx``, ``model_fp32.onnx``,
    ``recipe.json``, ``metrics.json``), filled in a temporary folder and renamed into place."""
    from ..export import export_fp32, export_quantized

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        example = tuple(workload.example_inputs(1))
        ins, outs = tuple(workload.input_names), tuple(workload.output_names)
        fp32 = export_fp32(fp_model, example, tmp / "model_fp32.onnx", ins, outs)
        model = export_quantized(qmodel, example, tmp / "model.onnx", recipe.target, ins, outs, registry=registry)
        sizes: dict[str, float] = {"model.onnx": model.stat().st_size, "model_fp32.onnx": fp32.stat().st_size}
        sizes["ratio"] = round(sizes["model.onnx"] / sizes["model_fp32.onnx"], 4)
        metrics = {"workload": workload.name, "method": recipe.method, "calibrator": recipe.calibrator,
                   "target": recipe.target, "weight_bits": recipe.weight_bits,
                   "activation_bits": recipe.activation_bits, "metric": getattr(workload, "metric", None),
                   "sizes": sizes, **extra}
        recipe.save(tmp / "recipe.json")
        write_json_atomic(tmp / "metrics.json", metrics)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics


def _auto_variant(cfg: BenchConfig, workload: Any, fp_model: Any, variant: Variant, registry: Any,
                  out: Path) -> dict[str, Any]:
    """Every registered calibrator from ONE histogram pass; the best by output cosine to FP32 on validation
    batches from the training split (another seed's stream than calibration) is exported to ``out``."""
    from ..pipeline import predict_torch
    from ..quant.api import compare_calibrators

    started = time.perf_counter()
    recipe = _recipe(cfg, variant.method, "max", variant.cpu)
    names = registry.names("calibrators")
    calib = workload.calibration_batches(recipe.calib_batch_size, seed=recipe.seed)
    models = compare_calibrators(fp_model, recipe, calib, names, registry=registry, progress=cfg.progress)
    quantize_seconds = time.perf_counter() - started
    ins = tuple(workload.input_names)
    val_batches = itertools.islice(
        workload.calibration_batches(recipe.calib_batch_size, seed=recipe.seed + SELECT_SEED_OFFSET),
        cfg.select_batches)
    arrays = [_as_numpy(b) for b in val_batches]
    val = {n: np.concatenate([a[i] for a in arrays]) for i, n in enumerate(ins)}
    reference = predict_torch(fp_model, val, ins)
    scores = {name: output_cosine(predict_torch(m, val, ins), reference) for name, m in models.items()}
    best = max(sorted(scores), key=lambda n: scores[n])
    selection = {"chosen": best, "scores": scores,
                 "rule": "highest mean output cosine to FP32 (fake quant in PyTorch)",
                 "validation": f"{len(next(iter(val.values())))} items from the training split "
                               f"(calibration_batches seed {recipe.seed + SELECT_SEED_OFFSET}); test set not used",
                 "seconds": round(time.perf_counter() - started, 3)}
    chosen = recipe.replace(calibrator=best)
    metrics = _write_output(out, models[best], fp_model, chosen, workload, registry,
                            {"calibrator_selection": selection, "quantize_seconds": round(quantize_seconds, 3)})
    return {**_details(variant, chosen, out, metrics), "calibrator_selection": selection}


def _details(variant: Variant, recipe: QuantRecipe, out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "quantplug", "label": variant.label, "method": variant.method, "calibrator": recipe.calibrator,
            "recipe": recipe.to_dict(), "path": str(out / "model.onnx"), "fp32_path": str(out / "model_fp32.onnx"),
            "size_bytes": metrics["sizes"]["model.onnx"], "size_ratio": metrics["sizes"]["ratio"],
            "quantize_seconds": metrics.get("quantize_seconds"), "stages": metrics.get("stages", {})}


def _quantize_variant(cfg: BenchConfig, workload: Any, fp_model: Any, variant: Variant, registry: Any,
                      out: Path) -> dict[str, Any]:
    from ..pipeline import quantize_to_dir

    recipe = _recipe(cfg, variant.method, variant.calibrator, variant.cpu)
    result = quantize_to_dir(workload, recipe, out, registry=registry, progress=cfg.progress, model=fp_model,
                             evaluate=False)
    return _details(variant, recipe, out, result.metrics)


def build_models(cfg: BenchConfig, workload: Any, variants: list[Variant], registry: Any, folder: Path,
                 step: Callable[[str], None] = lambda _s: None) -> BuiltModels:
    """Quantize every variant into ``folder/<key>/``, export the peer into ``folder/peer/model.onnx``."""
    from ..export.bench import ort_quantize_static

    step("FP32 model")
    fp_model = workload.build_model(seed=0, progress=cfg.progress)
    fp_model.eval()
    built = BuiltModels(paths={})
    for v in variants:
        step(f"quantize {v.key} ({v.method}, {'best calibrator' if v.calibrator == AUTO else v.calibrator})")
        try:
            if v.calibrator == AUTO:
                built.details[v.key] = _auto_variant(cfg, workload, fp_model, v, registry, folder / v.key)
                built.calibrator_selection = built.details[v.key]["calibrator_selection"]
            else:
                built.details[v.key] = _quantize_variant(cfg, workload, fp_model, v, registry, folder / v.key)
        except QuantplugError as e:  # one variant failing must not hide the others' measurements
            if len(variants) == 1:
                raise
            built.details[v.key] = {"kind": "quantplug", "label": v.label, "method": v.method, "error": str(e)}
            continue
        built.paths[v.key] = Path(built.details[v.key]["path"])
    done = [k for k in built.details if "error" not in built.details[k]]
    if not done:
        raise QuantplugError("; ".join(f"{k}: {d['error']}" for k, d in built.details.items()))
    first = built.details[done[0]]
    fp32_path = Path(first["fp32_path"])
    built.paths = {"fp32": fp32_path, **built.paths}
    built.details = {"fp32": {"kind": "fp32", "label": "FP32", "path": str(fp32_path),
                              "size_bytes": fp32_path.stat().st_size}, **built.details}

    step("peer: ONNX Runtime quantize_static")
    primary = _recipe(cfg, "ptq", "max")  # the calibration batches depend only on batch size, count and seed
    feeds = calibration_feeds(workload, primary)
    peer_dir = folder / "peer"
    peer_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = peer_dir / ".model.onnx.tmp"
    ort_quantize_static(fp32_path, tmp, feeds, calibrate_method="MinMax")
    tmp.replace(peer_dir / "model.onnx")
    peer = peer_dir / "model.onnx"
    built.paths["peer"] = peer
    built.details["peer"] = {
        "kind": "peer", "label": "peer (ORT quantize_static)", "tool": PEER_TOOL, "path": str(peer),
        "settings": {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                     "per_channel": True, "calibrate_method": "MinMax", "pre_process": "quant_pre_process",
                     "calibration": f"the same {len(feeds)} batches of {cfg.calib_batch_size} the engine used"},
        "size_bytes": peer.stat().st_size, "size_ratio": round(peer.stat().st_size / fp32_path.stat().st_size, 4),
        "quantize_seconds": round(time.perf_counter() - started, 3),
    }
    return built
