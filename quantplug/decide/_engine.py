"""The few engine calls ``tune`` and ``sensitivity`` make, in one place (public API only)."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["SAVED_EVALUATOR", "default_registry", "latency_ms", "load_saved", "quantize", "write_artifacts"]

SAVED_EVALUATOR = "onnxruntime on the saved model.onnx"


def default_registry() -> Any:
    from ..registry import build_registry

    return build_registry()


def quantize(model: Any, recipe: Any, calib: Any, train: Any, *, workload: Any, registry: Any,
             progress: bool, quiet_thin: bool = False) -> Any:
    """:func:`quantplug.quantize`; ``quiet_thin`` silences the engine's few-batches warning (the caller
    deliberately calibrates on few batches, e.g. in a sensitivity pass, and reports it itself)."""
    from .. import quantize as _quantize

    with _quiet_thin(quiet_thin):
        return _quantize(model, recipe, calib, train, workload=workload, registry=registry, progress=progress)


@contextlib.contextmanager
def _quiet_thin(enabled: bool = True) -> Iterator[None]:
    """Silence the engine's "calibrated on only N batches" warning (the caller reports thinness itself)."""
    if not enabled:
        yield
        return
    logger = logging.getLogger("quantplug.quant.calibrate")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*calibrated on only.*")
            yield
    finally:
        logger.setLevel(level)


def compare_calibrators(model: Any, recipe: Any, calib: Any, names: list[str], *, registry: Any,
                        progress: bool) -> dict[str, Any]:
    """PTQ models for every calibrator in ``names`` from one histogram pass (the engine's)."""
    from ..quant.api import compare_calibrators as _compare

    with _quiet_thin():
        return _compare(model, recipe, calib, names, registry=registry, progress=progress)


def write_artifacts(output: Path, qmodel: Any, fp_model: Any, recipe: Any, workload: Any,
                    metrics: Callable[[], dict[str, Any]], *, registry: Any = None, write_fp32: bool = True) -> None:
    """Write ``output`` in the layout of ``quantplug quantize --output`` (each file atomically):
    ``model.onnx`` (quantized), ``model_fp32.onnx``, ``recipe.json``, ``metrics.json``."""
    from ..export import export_fp32
    from ..report.io import write_json_atomic

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _export(qmodel, workload, output / "model.onnx", target=recipe.target, registry=registry)
    if write_fp32 or not (output / "model_fp32.onnx").is_file():
        export_fp32(fp_model, tuple(workload.example_inputs(1)), output / "model_fp32.onnx",
                    _names(workload, "input_names"), _names(workload, "output_names"))
    recipe.save(output / "recipe.json")
    write_json_atomic(output / "metrics.json", metrics())  # last: it may describe the files above


def _names(workload: Any, attr: str) -> list[str] | None:
    names = getattr(workload, attr, None)
    return list(names) if names else None


class _OrtModel:
    """A saved ONNX model called like a module: ``model(*tensors) -> first output`` (torch tensor)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors: Any) -> Any:
        import torch

        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.names, tensors, strict=True)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def load_saved(output: Path) -> _OrtModel:
    return _OrtModel(Path(output) / "model.onnx")


def latency_ms(qmodel: Any, workload: Any, repeats: int = 20) -> float:
    """Median batch-1 latency of the exported QDQ model under ONNX Runtime (what the CPU target runs)."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="quantplug-speed-") as tmp:
        path = Path(tmp) / "model.onnx"
        _export(qmodel, workload, path, target=getattr(getattr(qmodel, "quantplug_recipe", None), "target",
                                                       "onnxruntime"))
        model = _OrtModel(path)
        inputs = workload.example_inputs(1)
        model(*inputs)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def _export(qmodel: Any, workload: Any, path: Path, *, target: str = "onnxruntime", registry: Any = None) -> None:
    from ..export import export_quantized

    export_quantized(qmodel, tuple(workload.example_inputs(1)), path, target, _names(workload, "input_names"),
                     _names(workload, "output_names"), registry=registry)
