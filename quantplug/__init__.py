"""quantplug: quantize trained PyTorch models, export QDQ ONNX, serve on Triton, prove the speed-up.

``import quantplug`` is light: it never imports onnxruntime, tritonclient or locust, nor touches CUDA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CalibrationError,
    ConfigError,
    ExportError,
    PluginError,
    QuantplugError,
    TrainingDivergedError,
    UnknownNameError,
)
from .hookspecs import hookimpl
from .plugins import get_plugin_manager
from .recipe import LayerOverride, QuantRecipe
from .registry import Backend, Calibrator, Method, MethodCost, Registry, Scheme, Workload, build_registry

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CalibrationError",
    "Calibrator",
    "ConfigError",
    "ExportError",
    "Histogram",
    "LayerOverride",
    "Method",
    "MethodCost",
    "PluginError",
    "QuantContext",
    "QuantRecipe",
    "QuantplugError",
    "Registry",
    "Scheme",
    "TrainingDivergedError",
    "UnknownNameError",
    "Workload",
    "__version__",
    "build_registry",
    "first_output",
    "get_plugin_manager",
    "hookimpl",
    "quantize",
    "quantize_onnx",
]

# The method API (docs/plugins.md), imported on first use so that `import quantplug` stays light.
_LAZY = {
    "QuantContext": ("quantplug.quant.context", "QuantContext"),
    "Histogram": ("quantplug.quant.histogram", "Histogram"),
    "first_output": ("quantplug.quant.train", "first_output"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'quantplug' has no attribute {name!r}")

if TYPE_CHECKING:
    import torch

    from .quant.context import QuantContext
    from .quant.histogram import Histogram
    from .quant.train import first_output


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
