"""Build a workload's benchmark models: FP32, quantplug's INT8 variant(s), and the peer.

Each quantplug model is a ``quantize_to_dir`` output folder (``model.onnx``, ``model_fp32.onnx``,
``recipe.json``, ``metrics.json``). The peer is ONNX Runtime's own ``quantize_static`` (QDQ, UINT8
activations, INT8 per-channel weights) of the same FP32 ONNX, calibrated on exactly the batches the
engine calibrated on. With calibrator ``auto``, every registered calibrator is tried from one histogram
pass and the one whose outputs stay closest to FP32 (mean cosine) on a validation split drawn from the
training data wins; the held-out test set is never used to choose.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..recipe import QuantRecipe
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


def _recipe(cfg: BenchConfig, method: str, calibrator: str) -> QuantRecipe:
    return QuantRecipe(method=method, calibrator=calibrator, target="onnxruntime", calib_batches=cfg.calib_batches,
                       calib_batch_size=cfg.calib_batch_size, seed=0)


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


def select_calibrator(cfg: BenchConfig, workload: Any, fp_model: Any, registry: Any) -> dict[str, Any]:
    """Every registered calibrator from one histogram pass; the best by output cosine to FP32 on validation
    batches from the training split (another seed's stream than calibration)."""
    from ..pipeline import predict_torch
    from ..quant.api import compare_calibrators

    started = time.perf_counter()
    recipe = _recipe(cfg, "ptq", "max")
    names = registry.names("calibrators")
    calib = workload.calibration_batches(recipe.calib_batch_size, seed=recipe.seed)
    models = compare_calibrators(fp_model, recipe, calib, names, registry=registry, progress=cfg.progress)
    ins = tuple(workload.input_names)
    val_batches = itertools.islice(
        workload.calibration_batches(recipe.calib_batch_size, seed=recipe.seed + SELECT_SEED_OFFSET),
        cfg.select_batches)
    arrays = [_as_numpy(b) for b in val_batches]
    val = {n: np.concatenate([a[i] for a in arrays]) for i, n in enumerate(ins)}
    reference = predict_torch(fp_model, val, ins)
    scores = {name: output_cosine(predict_torch(m, val, ins), reference) for name, m in models.items()}
    best = max(sorted(scores), key=lambda n: scores[n])
    return {"chosen": best, "scores": scores, "rule": "highest mean output cosine to FP32 (fake quant, PyTorch)",
            "validation": f"{len(next(iter(val.values())))} items from the training split "
                          f"(calibration_batches seed {recipe.seed + SELECT_SEED_OFFSET}); test set not used",
            "seconds": round(time.perf_counter() - started, 3)}


def _quantize_variant(cfg: BenchConfig, workload: Any, fp_model: Any, variant: Variant, calibrator: str,
                      registry: Any, out: Path) -> dict[str, Any]:
    from ..pipeline import quantize_to_dir

    recipe = _recipe(cfg, variant.method, calibrator)
    result = quantize_to_dir(workload, recipe, out, registry=registry, progress=cfg.progress, model=fp_model,
                             evaluate=False)
    m = result.metrics
    return {"kind": "quantplug", "label": variant.label, "method": variant.method, "calibrator": calibrator,
            "recipe": recipe.to_dict(), "path": str(result.model_path), "fp32_path": str(result.fp32_path),
            "size_bytes": m["sizes"]["model.onnx"], "size_ratio": m["sizes"]["ratio"],
            "quantize_seconds": m["quantize_seconds"], "stages": m.get("stages", {})}


def build_models(cfg: BenchConfig, workload: Any, variants: list[Variant], registry: Any, folder: Path,
                 step: Callable[[str], None] = lambda _s: None) -> BuiltModels:
    """Quantize every variant into ``folder/<key>/``, export the peer into ``folder/peer/model.onnx``."""
    from ..export.bench import ort_quantize_static

    step("FP32 model")
    fp_model = workload.build_model(seed=0, progress=cfg.progress)
    fp_model.eval()
    built = BuiltModels(paths={})
    chosen: dict[str, str] = {}
    for v in variants:
        calibrator = v.calibrator
        if calibrator == AUTO:
            if AUTO not in chosen:
                step("choose calibrator")
                built.calibrator_selection = select_calibrator(cfg, workload, fp_model, registry)
                chosen[AUTO] = built.calibrator_selection["chosen"]
            calibrator = chosen[AUTO]
        step(f"quantize {v.key} ({v.method}, {calibrator})")
        built.details[v.key] = _quantize_variant(cfg, workload, fp_model, v, calibrator, registry, folder / v.key)
        built.paths[v.key] = Path(built.details[v.key]["path"])
    first = built.details[variants[0].key]
    fp32_path = Path(first["fp32_path"])
    built.paths = {"fp32": fp32_path, **built.paths}
    built.details = {"fp32": {"kind": "fp32", "label": "FP32", "path": str(fp32_path),
                              "size_bytes": fp32_path.stat().st_size}, **built.details}

    step("peer: ONNX Runtime quantize_static")
    primary = _recipe(cfg, variants[0].method, first["calibrator"])
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
