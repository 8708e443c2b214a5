"""Triton Inference Server: model repository writer, config builder and validator, embedded server, client.

Submodules (imported on demand, so ``import quantplug`` stays light):

- :mod:`quantplug.triton.onnx_io`: tensor names, dtypes and dims read from an ONNX graph.
- :mod:`quantplug.triton.config`: ``ModelConfig`` protobuf builder, parser and semantic validator.
- :mod:`quantplug.triton.repository`: ``add_model``, ``add_from_output``, ``check_repository``.
- :mod:`quantplug.triton.server`: ``TritonServer`` (the bundled ``tritonserver`` binary).
- :mod:`quantplug.triton.client`: ``infer``, ``evaluate_served``, ``model_statistics``.
"""

from __future__ import annotations

__all__: list[str] = []
