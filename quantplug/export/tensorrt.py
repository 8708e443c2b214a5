"""TensorRT explicit-quantization rules (moved to the tensorrt backend, which owns them).

The check lives in :mod:`quantplug.builtin.backends.tensorrt` as ``TensorRTBackend.check_onnx``; the
exporter calls every backend's ``check_onnx``. This name stays for callers of
``quantplug.export.check_tensorrt_rules``.
"""

from __future__ import annotations

from ..builtin.backends.tensorrt import check_tensorrt_rules

__all__ = ["check_tensorrt_rules"]
