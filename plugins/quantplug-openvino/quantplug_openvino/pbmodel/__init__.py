"""The python-backend model file that the ``embedded`` flavour copies into each version folder."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODEL_PY"]

MODEL_PY = Path(__file__).with_name("model.py")
