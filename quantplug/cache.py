"""Where quantplug caches trained models and other reusable artifacts."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$QUANTPLUG_CACHE`` or ``.quantplug-cache`` in the working directory; created on demand."""
    root = Path(os.environ.get("QUANTPLUG_CACHE", ".quantplug-cache"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
