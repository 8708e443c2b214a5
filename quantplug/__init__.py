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
    "quantize_onnx",
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


def quantize_onnx(onnx_path: Any, data: str, output_dir: Any, recipe: QuantRecipe | None = None,
                  **kwargs: Any) -> Any:
    """Quantize an existing ONNX file into ``output_dir``; see :func:`quantplug.onnx_in.quantize_onnx`."""
    from .onnx_in import quantize_onnx as _quantize_onnx

    return _quantize_onnx(onnx_path, data, output_dir, recipe, **kwargs)
