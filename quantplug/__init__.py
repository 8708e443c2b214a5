"""quantplug: quantize trained PyTorch models, export QDQ ONNX, serve on Triton, prove the speed-up.

``import quantplug`` is light: it never imports onnxruntime, tritonclient or locust, nor touches CUDA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError, PluginError, QuantplugError
from .hookspecs import hookimpl
from .plugins import get_plugin_manager
from .recipe import LayerOverride, QuantRecipe
from .registry import Registry, Scheme, build_registry

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "LayerOverride",
    "PluginError",
    "QuantRecipe",
    "QuantplugError",
    "Registry",
    "Scheme",
    "__version__",
    "build_registry",
    "get_plugin_manager",
    "hookimpl",
    "quantize",
]

if TYPE_CHECKING:
    import torch


def quantize(
    model: torch.nn.Module,
    recipe: QuantRecipe,
    calib_data: Any,
    train_data: Any = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Quantize ``model`` following ``recipe``; see :func:`quantplug.quant.api.quantize`."""
    from .quant.api import quantize as _quantize

    return _quantize(model, recipe, calib_data, train_data, **kwargs)
