"""The python-backend model that the embedded ``onnxruntime`` flavour writes into each version folder.

``model.py`` here is a template file copied verbatim (never imported by quantplug): Triton's python
backend stub runs it with the interpreter first on PATH, next to the ONNX file it serves.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODEL_PY"]

MODEL_PY = Path(__file__).with_name("model.py")
