"""ONNX in: quantize an existing ONNX model with every method (PTQ, QAT, QAD, dynamic).

:func:`load_onnx` reads and checks a file and turns its graph into a trainable ``torch.fx.GraphModule``
(:mod:`quantplug.onnx_in.convert`); :class:`OnnxWorkload` presents it with its data as a workload, so the
same pipeline runs as for a PyTorch model (``quantplug quantize --onnx FILE --data ...``);
:func:`quantize_onnx` is the one-call API. ``onnx`` is imported only when a file is read.
"""

from __future__ import annotations

from .convert import SUPPORTED_OPS, OnnxConversionError
from .load import OnnxModel, load_onnx
from .workload import OnnxWorkload, quantize_onnx

__all__ = ["SUPPORTED_OPS", "OnnxConversionError", "OnnxModel", "OnnxWorkload", "load_onnx", "quantize_onnx"]
