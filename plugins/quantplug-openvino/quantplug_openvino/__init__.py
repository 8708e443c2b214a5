"""quantplug-openvino: OpenVINO as a quantplug backend, registered through the public plugin API only.

``--target openvino`` quantizes in the scheme OpenVINO's CPU plugin runs in integer kernels (measured on
the QDQ files quantplug exports, see :data:`OPENVINO_SCHEME`); ``repo add --backend openvino`` writes a
python-backend model running OpenVINO for the embedded server (flavour ``embedded``) or a model for
Triton's native ``openvino`` backend (flavour ``container``, see deploy/openvino.md). Importing this
package does not import openvino: the runtime is imported where a model is compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from quantplug import Scheme, hookimpl

__all__ = ["OPENVINO_SCHEME", "register_backends"]

_SCHEME_FIELDS = {f.name for f in dataclasses.fields(Scheme)}

# Measured (AMD EPYC, AVX2 without VNNI, OpenVINO 2026.4, fake-quant PyTorch vs OpenVINO on the same QDQ
# file; max |logit difference| / top-1 agreement with FP32 on 256 held-out images):
# - UINT8 asymmetric activations + INT8 per-channel weights, Q/DQ on conv/linear/add outputs, INT32 biases
#   (the ONNX Runtime layout): runs in integer kernels (resnet18 batch 8 at 2x OpenVINO FP32). With full
#   8-bit weights [-127, 127] it is NOT exact on this CPU: mnist-resnet 0.25 logits off, resnet18 top-1
#   57.8% in OpenVINO vs 69.5% in PyTorch (u8 x s8 pair sums saturate without VNNI, as in ONNX Runtime's
#   kernels, if less often). With 7-bit weights [-64, 64]: mnist-resnet 0.10 (one output step), resnet18
#   0.060 with equal top-1 (54.7% vs 53.9%), at the same speed.
# - INT8 symmetric activations: 1.7x faster than FP32 but wrong (resnet18 top-1 4.7% vs 57.8% in
#   PyTorch, 0.62 logits off): not a scheme to run on OpenVINO's CPU plugin here.
# So: the ONNX Runtime layout, with the CPU-aware weight range (7-bit where the CPU has no VNNI/AMX).
_CPU_AWARE: dict[str, Any] = {"cpu_sensitive": True} if "cpu_sensitive" in _SCHEME_FIELDS else {}

OPENVINO_SCHEME = Scheme(
    name="openvino",
    activation_dtype="uint8",
    activation_symmetric=False,
    weight_per_channel=True,
    int4_weights=False,  # INT4 weight-only QDQ is not measured under OpenVINO here: refused, not guessed
    min_opset=13,
    **_CPU_AWARE,
)


@hookimpl
def register_backends(register: Any) -> None:
    from .backend import OpenVinoBackend

    register(OpenVinoBackend(OPENVINO_SCHEME))
