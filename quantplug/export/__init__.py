"""ONNX export: FP32, QDQ (per target), dynamic; target rule checks; benchmarks."""

from __future__ import annotations

from .onnx_export import export_fp32, export_qdq, export_quantized, save_atomic
from .tensorrt import check_tensorrt_rules

__all__ = ["check_tensorrt_rules", "export_fp32", "export_qdq", "export_quantized", "save_atomic"]
