"""Read an ONNX file, reject what cannot convert (one line each), convert it and check the conversion."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .convert import Converted, OnnxConversionError, convert_graph

__all__ = ["OnnxModel", "load_onnx", "read_onnx"]


@dataclass
class OnnxModel:
    """A converted ONNX file: ``module`` (trainable fx graph), its I/O and the conversion check."""

    path: Path
    converted: Converted
    max_abs_diff: float | None = None  # converted module vs ONNX Runtime on a probe batch

    @property
    def module(self) -> Any:
        return self.converted.module

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.converted.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.converted.output_names

    @property
    def dynamic_batch(self) -> bool:
        return all(not isinstance(s[0], int) for s in self.converted.input_shapes.values() if s)

    def fresh_module(self) -> Any:
        return copy.deepcopy(self.converted.module).eval()

    def probe_inputs(self, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs shaped like the graph's (unknown dimensions: ``batch``; integer inputs: ones)."""
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        for name in self.input_names:
            shape = [d if isinstance(d, int) and d > 0 else batch for d in self.converted.input_shapes[name]]
            dtype = self.converted.input_dtypes[name]
            if dtype.is_floating_point:
                out[name] = rng.standard_normal(shape).astype(np.float32)
            else:
                out[name] = np.ones(shape, dtype=np.int64 if str(dtype) == "torch.int64" else np.int32)
        return out


def read_onnx(path: str | os.PathLike[str]) -> Any:
    """The ModelProto with its weights, or one line saying why it cannot be read."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    p = Path(path)
    if not p.is_file():
        raise OnnxConversionError(f"ONNX file {p} does not exist")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise OnnxConversionError(f"{p} is not a readable ONNX model: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    external = [t for t in proto.graph.initializer if uses_external_data(t)]
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        loc = p.parent / info.get("location", "")
        if not info.get("location") or not loc.is_file():
            raise OnnxConversionError(
                f"{p}: initializer {t.name!r} keeps its data in external file {info.get('location')!r}, which is "
                f"missing next to the model (looked in {p.parent}); copy the data file beside it")
    if external:
        try:
            onnx.load_external_data_for_model(proto, str(p.parent))
        except Exception as e:
            raise OnnxConversionError(f"{p}: external data cannot be read: {type(e).__name__}: {e}") from e
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise OnnxConversionError(f"{p} is not a valid ONNX model ({msg}); fix or re-export it") from e
    return proto


def load_onnx(path: str | os.PathLike[str], *, check: bool = True, tolerance: float = 1e-3) -> OnnxModel:
    """Read, convert and (``check``) compare the converted module with ONNX Runtime on a probe batch.

    The probe runs at batch 2 (or the file's fixed batch); a relative difference above ``tolerance``
    raises :class:`OnnxConversionError` naming the difference. Nothing is calibrated or written.
    """
    p = Path(path)
    proto = read_onnx(p)
    model = OnnxModel(p, convert_graph(proto, str(p)))
    if check:
        model.max_abs_diff = _check_against_ort(model, proto, tolerance)
    return model


def _check_against_ort(model: OnnxModel, proto: Any, tolerance: float) -> float:
    import onnxruntime as ort
    import torch

    feeds = model.probe_inputs()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ref = sess.run(None, feeds)
    except Exception as e:
        raise OnnxConversionError(f"{model.path}: ONNX Runtime cannot run the file on random inputs "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    with torch.no_grad():
        out = model.module(*[torch.from_numpy(feeds[k]) for k in model.input_names])
    outs = out if isinstance(out, tuple | list) else (out,)
    worst = 0.0
    for name, r, o in zip(model.output_names, ref, outs, strict=True):
        o = o.detach().float().numpy()
        if o.shape != r.shape:
            raise OnnxConversionError(f"{model.path}: converted output {name!r} has shape {o.shape}, ONNX "
                                      f"Runtime gives {r.shape}; please report this file")
        diff = float(np.abs(o - r).max()) if r.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 1.0
        if diff > tolerance * max(1.0, scale):
            raise OnnxConversionError(f"{model.path}: the converted graph differs from ONNX Runtime on output "
                                      f"{name!r} by {diff:.3g} (max |output| {scale:.3g}); please report this file")
        worst = max(worst, diff)
    return worst
