"""``repo add`` warns when a quantized model will not really run in integer under ONNX Runtime.

Two cases, each one line: a model quantized for the ``tensorrt`` scheme (INT8 symmetric activations)
going into the ``onnxruntime`` backend, where ONNX Runtime runs such Q/DQ pairs in float (measured at
0.7-5x FP32 time); and a model whose share of conv/matmul multiply-adds that ONNX Runtime executes in
integer kernels (:mod:`quantplug.export.coverage`; read from ``metrics.json`` when it comes along) is
below :data:`quantplug.export.coverage.LOW_SHARE`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

__all__ = ["integer_warnings"]


def integer_warnings(name: str, onnx_path: str | Path, backend: str, metrics: str | Path | None = None,
                     *, warn: bool = True) -> list[str]:
    """The warnings for model ``name`` (also issued with :func:`warnings.warn` when ``warn``)."""
    from ..export.coverage import LOW_SHARE, integer_share
    from ..export.metadata import read_metadata

    if backend != "onnxruntime":
        return []
    scheme = read_metadata(onnx_path).get("scheme")
    if not scheme:  # not a quantplug-quantized model (e.g. the FP32 baseline)
        return []
    out: list[str] = []
    if scheme == "tensorrt":
        out.append(f"model {name!r} was quantized for the tensorrt scheme (INT8 symmetric activations); ONNX "
                   "Runtime runs it at 0.7-5x FP32 time: quantize with --target onnxruntime for this backend")
    else:
        share = None
        if metrics is not None and Path(metrics).is_file():
            share = (json.loads(Path(metrics).read_text()).get("integer") or {}).get("integer_share")
        if share is None:
            try:
                share = integer_share(onnx_path).share
            except Exception:  # noqa: BLE001 - a model ORT cannot run is reported where it is loaded
                share = None
        if share is not None and share < LOW_SHARE:
            out.append(f"model {name!r} runs only {share:.0%} of its conv/matmul multiply-adds in integer under "
                       "ONNX Runtime, so INT8 may be slower than FP32; see metrics.json 'integer' for the float "
                       "layers (a model quantplug could not capture whole)")
    if warn:
        for message in out:
            warnings.warn(message, UserWarning, stacklevel=4)
    return out
