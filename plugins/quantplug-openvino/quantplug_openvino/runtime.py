"""OpenVINO in-process: a compiled model with ONNX Runtime's ``run`` shape, and NNCF's INT8 (the peer).

Both import openvino (and nncf) only when called.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OpenVinoSession", "compile_config", "nncf_quantize"]


def compile_config(threads: int, precision: str = "f32") -> dict[str, Any]:
    """CPU plugin settings: one stream of ``threads`` threads, latency mode, FP32 parts kept FP32, no
    pinning (several models and instances share the cores)."""
    return {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision, "ENABLE_CPU_PINNING": False}


class OpenVinoSession:
    """``path`` (ONNX or IR ``.xml``) compiled for the CPU; ``run(None, feeds)`` returns every output."""

    def __init__(self, path: str | os.PathLike[str], threads: int, precision: str = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_config(threads, precision))
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def run(self, output_names: list[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(dict(feeds))
        names = output_names or self.output_names
        return [np.array(result[self.compiled.output(n)]) for n in names]


def nncf_quantize(fp32_onnx: str | os.PathLike[str], out_xml: str | os.PathLike[str],
                  batches: Iterable[Mapping[str, np.ndarray]]) -> Path:
    """NNCF's default INT8 post-training quantization (``nncf.quantize``, preset performance) of the FP32
    ONNX on ``batches``, saved as OpenVINO IR (``out_xml`` + ``.bin``): the peer quantplug is compared with."""
    import nncf
    import openvino as ov

    items = [dict(b) for b in batches]
    model = ov.Core().read_model(str(fp32_onnx))
    names = [i.get_any_name() for i in model.inputs]
    dataset = nncf.Dataset(items, lambda item: {n: item[n] for n in names})
    quantized = nncf.quantize(model, dataset, subset_size=len(items))
    out_xml = Path(out_xml)
    ov.save_model(quantized, str(out_xml))
    return out_xml
