"""``dynamic``: INT8 weights with activations quantized at run time (for linear-heavy models).

Linear layers get INT8 per-channel weights and a per-tensor UINT8 activation quantizer whose range is
computed from each tensor as it flows (ONNX Runtime's ``DynamicQuantizeLinear``); convolutions stay FP32.
The ONNX export goes through ONNX Runtime's ``quantize_dynamic`` on the FP32 graph
(:func:`quantplug.export.dynamic.export_dynamic`), which executes the same scheme.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantplug.errors import ConfigError
from quantplug.quant.context import QuantContext
from quantplug.quant.fold import fold_bn_sequential
from quantplug.quant.modules import QuantLinear
from quantplug.quant.prepare import PrepareReport, layer_setting
from quantplug.quant.quantizer import ActQuantizer, WeightQuantizer
from quantplug.registry import MethodCost

__all__ = ["DynamicMethod"]


@dataclass(frozen=True)
class DynamicMethod:
    name: str = "dynamic"
    description: str = "INT8 weights, activations quantized at run time (linear layers; no calibration)"
    needs_training_data: bool = False
    needs_labels: bool = False
    needs_calibration: bool = False
    cost: MethodCost = MethodCost(0, "none: weights are quantized offline, activation ranges are computed per batch "
                                     "at run time (a little runtime overhead; only Linear/MatMul layers run in INT8)",
                                  "no data at all")

    def prepare(self, model: nn.Module, recipe: Any, scheme: Any, example_inputs: Any = None) -> nn.Module:
        if scheme.activation_dtype != "uint8":
            raise ConfigError(f"dynamic quantization runs in ONNX Runtime, not {scheme.name!r}; use "
                              "--target onnxruntime, or a static method (ptq, qat, qad) for this target")
        if recipe.weight_bits != 8:
            raise ConfigError("dynamic quantization supports 8-bit weights only; use --weight-bits 8")
        model = copy.deepcopy(model).eval()
        report = PrepareReport(traced=False, folded_bn=fold_bn_sequential(model))
        for name, module in list(model.named_modules()):
            if type(module) is not nn.Linear:
                continue
            if layer_setting(recipe, name, 8) is None:
                report.fp_layers.append(name)
                continue
            act = ActQuantizer(f"{name}.input", "uint8", False)
            act.mode = "dynamic"
            wq = WeightQuantizer(8, per_channel=True, out_channels=module.out_features, qmax=scheme.weight_range(8))
            new = QuantLinear.from_float(module, wq, name, act)
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
            report.layers[name] = 8
        if not report.layers:
            raise ConfigError("dynamic quantization found no nn.Linear layer to quantize; use ptq for conv nets")
        model.quantplug_report = report  # type: ignore[assignment]
        model.quantplug_scheme = scheme  # type: ignore[assignment]
        model.quantplug_export = "dynamic"  # type: ignore[assignment]
        return model

    def apply(self, model: torch.nn.Module, recipe: Any, context: QuantContext) -> torch.nn.Module:
        return model
