"""The few engine calls ``tune`` and ``sensitivity`` make, in one place (public API only)."""

from __future__ import annotations

import time
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
    import warnings

    from .. import quantize as _quantize

    with warnings.catch_warnings():
        if quiet_thin:
            warnings.filterwarnings("ignore", message=".*calibrated on only.*")
        return _quantize(model, recipe, calib, train, workload=workload, registry=registry, progress=progress)


def write_artifacts(output: Path, qmodel: Any, fp_model: Any, recipe: Any, workload: Any,
                    metrics: dict[str, Any]) -> None:
    """Write ``output`` in the layout of ``quantplug quantize --output`` (each file atomically)."""
    raise NotImplementedError


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
        _export(qmodel, workload, path)
        model = _OrtModel(path)
        inputs = workload.example_inputs(1)
        model(*inputs)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def _export(qmodel: Any, workload: Any, path: Path) -> None:
    raise NotImplementedError
