"""Export FP32 and QDQ ONNX (TorchScript exporter, dynamic batch dimension, atomic write)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..quant.modules import QUANT_WRAPPERS, QuantEmbedding
from ..quant.prepare import act_quantizers
from .passes import (
    WeightSpec,
    constants_to_initializers,
    fold_weights,
    gather_then_dequantize,
    guard_masked_softmax,
    quantize_biases,
    scalar_qparams,
)

__all__ = ["export_fp32", "export_qdq", "export_quantized", "frozen_weights", "save_atomic"]


INT8_OPSET = 17
INT4_OPSET = 21


def _names(n: int, names: Sequence[str] | None, prefix: str) -> list[str]:
    if names is not None:
        return list(names)
    return [f"{prefix}{i}" if n > 1 else prefix for i in range(n)]


def _torch_export(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], input_names: Sequence[str] | None,
                  output_names: Sequence[str] | None, opset: int) -> Any:
    import onnx

    from ..hf import is_hf_model, wrap_hf_model

    if is_hf_model(model):
        # transformers 5 models do not export when the TorchScript exporter calls them positionally
        # ("got multiple values for argument 'use_cache'"): call them with keywords, return one tensor.
        model = wrap_hf_model(model, _names(len(example_inputs), input_names, "input"))
    model = model.eval()
    with torch.no_grad():
        out = model(*example_inputs)
    n_out = len(out) if isinstance(out, tuple | list) else 1
    ins = _names(len(example_inputs), input_names, "input")
    outs = _names(n_out, output_names, "output")
    axes = {n: {0: "batch"} for n in ins + outs}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, example_inputs, path, input_names=ins, output_names=outs,
                                  dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {type(e).__name__}: {e}; "
                              "the model must be exportable with the TorchScript exporter (opset "
                              f"{opset}): give it a forward that takes tensors and returns a tensor or a "
                              "tuple of tensors (a Hugging Face model: --model hf:DIR)") from e
        proto = onnx.load(path)
    guard_masked_softmax(proto)
    return proto


def save_atomic(model_proto: Any, path: str | os.PathLike[str]) -> Path:
    """Check and write an ONNX model to ``path`` via a temporary file in the same folder."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        onnx.checker.check_model(model_proto)
    except Exception as e:
        raise ExportError(f"the exported ONNX graph is invalid: {e}") from e
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model_proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def export_fp32(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | os.PathLike[str],
                input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                opset: int = INT8_OPSET) -> Path:
    """The FP32 model as ONNX with a dynamic batch dimension."""
    proto = _torch_export(model, example_inputs, input_names, output_names, opset)
    return save_atomic(proto, path)


@contextlib.contextmanager
def frozen_weights(model: nn.Module) -> Iterator[list[WeightSpec]]:
    """Inside: each quantized layer uses its dequantized weight as a constant; yields the weight specs."""
    specs: list[WeightSpec] = []
    wrappers = [m for m in model.modules() if isinstance(m, QUANT_WRAPPERS)]
    try:
        for m in wrappers:
            wq = m.weight_quant
            with torch.no_grad():
                deq = wq.quantize(m.weight.detach().float()).contiguous()
                scale = wq.scale(m.weight.detach().float())
                rows = wq._grouped(deq)
                q = torch.round(rows / scale[:, None]).reshape(deq.shape)
            wq.frozen = deq
            specs.append(WeightSpec(m.qname, q.to(torch.int8).cpu().numpy(), scale.cpu().numpy().astype(np.float32),
                                    wq.bits, wq.per_channel, wq.group_size,
                                    embedding=isinstance(m, QuantEmbedding)))
        yield specs
    finally:
        for m in wrappers:
            m.weight_quant.frozen = None


def export_qdq(qmodel: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | os.PathLike[str],
               target: str = "onnxruntime", input_names: Sequence[str] | None = None,
               output_names: Sequence[str] | None = None, *, registry: Any = None,
               check: bool = True) -> Path:
    """A calibrated fake-quant module as QDQ ONNX for ``target``.

    Weights are stored as INT8/INT4 initializers + DequantizeLinear; activations as Q/DQ pairs. INT4
    weights need opset 21. For runtimes whose integer kernels need it, biases become INT32 + DQ. For
    ``tensorrt`` the TensorRT QDQ rules are checked (its backend's ``check_onnx``).
    """
    from ..registry import build_registry

    uncalibrated = [q.qname for q in act_quantizers(qmodel) if q.mode == "observe"]
    if uncalibrated:
        raise ExportError(f"activation quantizer(s) {', '.join(uncalibrated[:3])} are still observing; "
                          "calibrate the model (quantplug.quantize) before export")
    if any(q.mode == "dynamic" for q in act_quantizers(qmodel)):
        raise ExportError("this model quantizes activations at run time; export it with export_quantized")
    registry = registry or build_registry()
    scheme = registry.backend(target).scheme
    int4 = any(m.weight_quant.bits == 4 for m in qmodel.modules() if isinstance(m, QUANT_WRAPPERS))
    opset = max(INT4_OPSET if int4 else INT8_OPSET, scheme.min_opset)
    with frozen_weights(qmodel) as specs:
        proto = _torch_export(qmodel, example_inputs, input_names, output_names, opset)
    constants_to_initializers(proto)
    fold_weights(proto, specs)
    missing = [s for s in specs if not s.folded]
    if missing:
        # Export ran on the frozen (quantized, then dequantized) weights, so the graph computes exactly the
        # fake-quant model either way; a weight not found as an initializer was dropped (a layer whose
        # output the model does not return, e.g. BERT's pooler) or constant-folded (an embedding lookup
        # with constant indices). Only its storage stays FP32: say so, naming them.
        msg = (f"{len(missing)} of {len(specs)} quantized weights are not stored as integers "
               f"({', '.join(s.name for s in missing[:4])}): the exporter dropped or constant-folded them; "
               "their values are still the quantized ones")
        warnings.warn(msg, UserWarning, stacklevel=2)
    scalar_qparams(proto)
    from ..quant.prepare import quantize_outputs

    if quantize_outputs(scheme):
        quantize_biases(proto)
        gather_then_dequantize(proto)
    if check:
        target_check = registry.backend(target).check_onnx  # the backend's own rules (None: none)
        if target_check is not None:
            target_check(proto)
    from .metadata import stamp_scheme

    stamp_scheme(proto, getattr(qmodel, "quantplug_scheme", None) or scheme)
    return save_atomic(proto, path)


def export_quantized(qmodel: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | os.PathLike[str],
                     target: str = "onnxruntime", input_names: Sequence[str] | None = None,
                     output_names: Sequence[str] | None = None, *, registry: Any = None) -> Path:
    """Export whatever ``quantplug.quantize`` returned: QDQ, or ONNX Runtime dynamic quantization."""
    if getattr(qmodel, "quantplug_export", "qdq") == "dynamic":
        from .dynamic import export_dynamic

        scheme = getattr(qmodel, "quantplug_scheme", None)
        reduced = scheme is not None and scheme.weight_range(8) < 127
        return export_dynamic(qmodel, example_inputs, path, input_names, output_names, reduce_range=reduced,
                              scheme=scheme)
    return export_qdq(qmodel, example_inputs, path, target, input_names, output_names, registry=registry)
