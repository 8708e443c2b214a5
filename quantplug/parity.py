"""Parity: does the model that runs compute what was calibrated and trained?

Three (or four) versions of one quantized model are compared on the same held-out inputs:

- ``torch``: the fake-quant PyTorch model (what calibration and QAT/QAD optimised);
- ``reference``: the exported QDQ ONNX run by ONNX Runtime with every graph optimisation off, so each
  QuantizeLinear/DequantizeLinear and float op runs as written: the fake-quant arithmetic, without torch;
- ``runtime``: the same file under ONNX Runtime with all optimisations, i.e. with the integer kernels
  (QLinearConv, QGemm, ...) that serving uses;
- ``served``: the model served by Triton, over gRPC (:func:`compare_served`).

``torch`` vs ``reference`` checks the export; ``reference`` vs ``runtime`` checks the runtime's integer
kernels (where a CPU without VNNI saturates, see :mod:`quantplug.cpu`); ``runtime`` vs ``served`` checks
the serving path. When ``torch`` and ``runtime`` diverge beyond the tolerance, :func:`localize` runs the
runtime with every activation's QuantizeLinear output exposed and compares them, in graph order, with the
fake-quant model's quantizer outputs (as integers), naming the first layer whose integers differ.

Tolerances, relative to the quantization error itself (``mean |FP32 - fake-quant|``), so they need no
knowledge of the output's scale:

- the runtime against the QDQ graph's own arithmetic (``TOLERANCE``, 0.5): its integer kernels must
  compute what the graph defines. Saturating kernels break this (measured on an AVX2-only EPYC with
  full 8-bit weights: mnist-resnet ~5x, random-init ResNet-18 1.56x); exact ones keep it (0.01x, 0.27x:
  per-layer requantisation rounding);
- the runtime against the fake-quant PyTorch model (``EXPORT_TOLERANCE``, 1.5): the exported graph may
  round differently from PyTorch in float ops between quantizers (LayerNorm, GELU, softmax), and in a
  deep transformer one-step differences compound (all-MiniLM-L6-v2: 1.03x, growing layer by layer with no
  single layer at fault), but a model whose deployed error is far beyond its quantization error is not
  the model that was calibrated and trained.

Without FP32 outputs (comparing two runs of one ONNX file, e.g. served vs in-process) the bound is 1% of
the outputs' standard deviation (``SAME_MODEL_TOLERANCE``): those must agree up to float summation order.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["EXPORT_TOLERANCE", "SAME_MODEL_TOLERANCE", "TOLERANCE", "Agreement", "LayerDivergence", "ParityReport", "check_parity", "compare",
           "compare_served", "localize", "run_onnx"]

TOLERANCE = {"mean_rel": 0.5}  # runtime vs QDQ reference, of the quantization error (mean |FP32 - fake-quant|)
EXPORT_TOLERANCE = {"mean_rel": 1.5}  # runtime (or reference) vs fake-quant PyTorch, of the quantization error
SAME_MODEL_TOLERANCE = {"mean_rel": 0.01, "max_rel": 0.05}  # of the outputs' std / range


@dataclass
class Agreement:
    """How closely ``candidate`` outputs follow ``reference`` outputs."""

    max_abs: float
    mean_abs: float
    max_rel: float  # max_abs / range of the reference outputs
    mean_rel: float  # mean_abs / the scale: the quantization error if given, else the outputs' std
    top1: float | None  # share of samples with the same argmax (classifier-like outputs)
    cosine_mean: float
    cosine_worst: float
    samples: int
    within_tolerance: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def compare(reference: np.ndarray, candidate: np.ndarray, *, scale: float | None = None,
            tolerance: dict[str, float] | None = None) -> Agreement:
    """Element-wise and per-sample agreement of two output arrays of the same shape.

    ``scale``: what ``mean_rel`` is relative to (the quantization error, mean |FP32 - quantized|); with it
    the default tolerance is :data:`TOLERANCE`, without it the outputs' std and :data:`SAME_MODEL_TOLERANCE`.
    """
    tol = tolerance or (TOLERANCE if scale is not None else SAME_MODEL_TOLERANCE)
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"outputs differ in shape: {ref.shape} vs {cand.shape}")
    diff = np.abs(ref - cand)
    finite = np.isfinite(diff).all()
    spread = float(ref.max() - ref.min()) if ref.size else 0.0
    std = float(ref.std()) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    mean_abs = float(diff.mean()) if diff.size else 0.0
    max_rel = max_abs / spread if spread > 0 else (0.0 if max_abs == 0 else float("inf"))
    norm = std if scale is None else scale
    mean_rel = mean_abs / norm if norm > 0 else (0.0 if mean_abs == 0 else float("inf"))
    n = len(ref)
    flat_r, flat_c = ref.reshape(n, -1), cand.reshape(n, -1)
    top1 = None
    if ref.ndim >= 2 and ref.shape[1] > 1:  # class (or channel) axis 1: argmax over it
        top1 = float(np.mean(ref.argmax(1) == cand.argmax(1)))
    cos = (flat_r * flat_c).sum(1) / (np.linalg.norm(flat_r, axis=1) * np.linalg.norm(flat_c, axis=1) + 1e-12)
    ok = bool(finite and mean_rel <= tol["mean_rel"] and max_rel <= tol.get("max_rel", float("inf")))
    return Agreement(max_abs, mean_abs, max_rel, mean_rel, top1, float(cos.mean()) if n else 1.0,
                     float(cos.min()) if n else 1.0, n, ok)


@dataclass
class LayerDivergence:
    """The first activation (in graph order) whose integer values differ between torch and the runtime."""

    quantizer: str  # the fake-quant model's quantizer
    onnx_node: str  # the QuantizeLinear node in the exported graph
    producer: str  # the ONNX node that computes the quantized tensor (the layer to look at)
    producer_op: str
    max_steps: int  # largest difference in quantization steps
    share_off: float  # share of elements more than one step apart

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParityReport:
    torch_vs_reference: Agreement | None
    reference_vs_runtime: Agreement
    torch_vs_runtime: Agreement | None
    quantization_error: float | None = None  # mean |FP32 - quantized|: the scale of the tolerance
    tolerance: dict[str, float] = field(default_factory=lambda: dict(TOLERANCE))
    first_divergence: LayerDivergence | None = None
    cpu: dict[str, Any] = field(default_factory=dict)
    made_for: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        torch_ok = self.torch_vs_runtime is None or self.torch_vs_runtime.within_tolerance
        return self.reference_vs_runtime.within_tolerance and torch_ok

    def cause(self) -> str:
        """A likely cause for a divergence, from where it shows."""
        if self.ok:
            return ""
        from .cpu import saturates

        if (self.torch_vs_reference is not None and not self.torch_vs_reference.within_tolerance
                and self.reference_vs_runtime.within_tolerance):
            return "the exported graph already differs from the fake-quant model (an export problem)"
        isa = self.cpu.get("isa", "")
        qmax = self.made_for.get("weight_qmax")
        if saturates(isa) and qmax and int(qmax) > 64:
            return (f"this CPU ({isa}, no VNNI) saturates ONNX Runtime's U8S8 kernels with full 8-bit weights; "
                    "re-quantize with --cpu avx2 (7-bit weights, exact)")
        return "the runtime's integer kernels compute this layer differently from its QDQ definition"

    def message(self) -> str:
        """One line: what diverged, where, and the likely cause."""
        kernels_ok = self.reference_vs_runtime.within_tolerance
        main = self.torch_vs_runtime if kernels_ok and self.torch_vs_runtime else self.reference_vs_runtime
        limit = EXPORT_TOLERANCE if main is self.torch_vs_runtime else self.tolerance
        where = ""
        if self.first_divergence is not None:
            d = self.first_divergence
            where = (f"; first divergent layer {d.producer} ({d.producer_op}, quantizer {d.quantizer}: "
                     f"up to {d.max_steps} steps, {d.share_off:.1%} of values off)")
        what = "the fake-quant model" if main is self.torch_vs_runtime else "the QDQ graph's own arithmetic"
        unit = "of the quantization error" if self.quantization_error is not None else "of the outputs' std"
        return (f"ONNX Runtime's outputs differ from {what} (mean abs {main.mean_abs:.4g}, max abs "
                f"{main.max_abs:.4g}: {main.mean_rel:.0%} {unit}; tolerance {limit['mean_rel']:.0%})"
                f"{where}; likely cause: {self.cause()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tolerance": self.tolerance,
            "quantization_error": self.quantization_error,
            "torch_vs_reference": self.torch_vs_reference.to_dict() if self.torch_vs_reference else None,
            "reference_vs_runtime": self.reference_vs_runtime.to_dict(),
            "torch_vs_runtime": self.torch_vs_runtime.to_dict() if self.torch_vs_runtime else None,
            "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
            "cpu": self.cpu,
            "made_for": self.made_for,
        }


def _session(model: Any, optimized: bool, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else os.fspath(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(model: Any, inputs: dict[str, np.ndarray], *, optimized: bool = True, threads: int = 2,
             batch: int = 256, outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run an ONNX file (or ModelProto) on ``inputs`` in batches; the requested outputs, concatenated."""
    sess = _session(model, optimized, threads)
    names = [i.name for i in sess.get_inputs()]
    n = len(inputs[names[0]])
    parts: list[list[np.ndarray]] = []
    for s in range(0, n, batch):
        res = sess.run(outputs, {k: np.ascontiguousarray(inputs[k][s:s + batch]) for k in names})
        parts.append(res)
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def _torch_outputs(qmodel: Any, inputs: dict[str, np.ndarray], input_names: tuple[str, ...]) -> np.ndarray:
    from .pipeline import predict_torch

    return predict_torch(qmodel, inputs, input_names)


def check_parity(qmodel: Any, onnx_path: str | os.PathLike[str], inputs: dict[str, np.ndarray],
                 input_names: tuple[str, ...], *, threads: int = 2, localize_on_failure: bool = True,
                 torch_out: np.ndarray | None = None, runtime_out: np.ndarray | None = None,
                 fp32_out: np.ndarray | None = None, reference_samples: int = 256) -> ParityReport:
    """Compare the fake-quant ``qmodel`` (None: skip torch), the QDQ reference and the runtime.

    ``torch_out``/``runtime_out``: outputs already computed on all of ``inputs`` (they are then reused);
    the unoptimised reference runs on the first ``reference_samples`` samples only (it runs at FP32 speed
    or slower). ``fp32_out``: the FP32 model's outputs on ``inputs``; the tolerance is then relative to the
    quantization error (:data:`TOLERANCE`), else to the outputs' spread (:data:`SAME_MODEL_TOLERANCE`).
    """
    from .cpu import detect_cpu
    from .export.metadata import read_metadata

    if runtime_out is None:
        runtime_out = run_onnx(onnx_path, inputs, optimized=True, threads=threads)[0]
    if torch_out is None and qmodel is not None:
        torch_out = _torch_outputs(qmodel, inputs, input_names)
    head = {k: v[:reference_samples] for k, v in inputs.items()}
    k = len(next(iter(head.values())))
    reference = run_onnx(onnx_path, head, optimized=False, threads=threads)[0]
    quantized = torch_out if torch_out is not None else reference
    err = err_head = None
    if fp32_out is not None:
        err = float(np.abs(np.asarray(fp32_out[:len(quantized)], np.float64) - quantized).mean())
        err_head = float(np.abs(np.asarray(fp32_out[:k], np.float64) - quantized[:k]).mean())
    export_tol = EXPORT_TOLERANCE if err is not None else None
    report = ParityReport(
        torch_vs_reference=(compare(torch_out[:k], reference, scale=err_head, tolerance=export_tol)
                            if torch_out is not None else None),
        reference_vs_runtime=compare(reference, runtime_out[:k], scale=err_head),
        torch_vs_runtime=(compare(torch_out, runtime_out, scale=err, tolerance=export_tol)
                          if torch_out is not None else None),
        quantization_error=err,
        tolerance=dict(TOLERANCE if err is not None else SAME_MODEL_TOLERANCE),
        cpu=detect_cpu().to_dict(),
        made_for=read_metadata(onnx_path),
    )
    if not report.ok and localize_on_failure:
        report.first_divergence = localize(qmodel, onnx_path, inputs, input_names, threads=threads)
    return report


def _norm(path: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", path).strip("_")


def _quantizer_outputs(qmodel: Any, inputs: dict[str, np.ndarray],
                       input_names: tuple[str, ...]) -> dict[str, list[tuple[np.ndarray, float, int]]]:
    """Every activation quantizer's integer outputs, per module path, in call order."""
    import torch

    from .quant.quantizer import ActQuantizer

    recorded: dict[str, list[tuple[np.ndarray, float, int]]] = {}
    handles = []
    for path, module in qmodel.named_modules():
        if not isinstance(module, ActQuantizer):
            continue

        def hook(mod: Any, args: Any, out: Any, path: str = path) -> None:
            if mod.mode != "quant":
                return
            scale, zp = float(mod.scale), int(mod.zero_point)
            q = torch.round(out.detach().float() / scale) + zp
            recorded.setdefault(path, []).append((q.cpu().numpy(), scale, zp))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            qmodel(*[torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in input_names])
    finally:
        for h in handles:
            h.remove()
    return recorded


def _expose_activation_q(onnx_path: str | os.PathLike[str]) -> tuple[Any, list[Any]]:
    import onnx

    proto = onnx.load(os.fspath(onnx_path))
    graph = proto.graph
    existing = {o.name for o in graph.output}
    weights = {i.name for i in graph.initializer}
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights]
    for n in q_nodes:
        if n.output[0] not in existing:
            graph.output.append(onnx.ValueInfoProto(name=n.output[0]))
    return proto, q_nodes


def localize(qmodel: Any, onnx_path: str | os.PathLike[str], inputs: dict[str, np.ndarray],
             input_names: tuple[str, ...], *, threads: int = 2, samples: int = 64) -> LayerDivergence | None:
    """The first activation, in graph order, whose integers differ between the reference and the runtime.

    The reference is the fake-quant ``qmodel``'s quantizer outputs, or (``qmodel`` None) the QDQ graph run
    without optimisations. The runtime runs with every activation QuantizeLinear output exposed as a graph
    output (ONNX Runtime still fuses them into its integer kernels: the exposed tensors are those kernels'
    outputs).
    """
    inputs = {k: v[:samples] for k, v in inputs.items()}
    proto, q_nodes = _expose_activation_q(onnx_path)
    producers = {o: n for n in proto.graph.node for o in n.output}
    names = [n.output[0] for n in q_nodes]
    runtime = dict(zip(names, run_onnx(proto, inputs, optimized=True, threads=threads, batch=samples,
                                       outputs=names), strict=True))
    if qmodel is None:
        ref_values = run_onnx(proto, inputs, optimized=False, threads=threads, batch=samples, outputs=names)
        reference = {n.name: (n.name, v) for n, v in zip(q_nodes, ref_values, strict=True)}
    else:
        reference = _match_torch(qmodel, inputs, input_names, q_nodes)
    for node in q_nodes:
        if node.name not in reference:
            continue
        label, q_ref = reference[node.name]
        q_run = runtime[node.output[0]].astype(np.float64)
        if q_ref.shape != q_run.shape:
            continue
        steps = np.abs(q_ref.astype(np.float64) - q_run)
        share_off = float(np.mean(steps > 1))
        if steps.max() > 2 and share_off > 0.001:
            src = producers.get(node.input[0])
            while src is not None and src.op_type in ("Relu", "Clip") and src.input[0] in producers:
                src = producers[src.input[0]]  # the layer, not its activation
            return LayerDivergence(label, node.name, src.name if src is not None else node.input[0],
                                   src.op_type if src is not None else "input", int(steps.max()), share_off)
    return None


def _match_torch(qmodel: Any, inputs: dict[str, np.ndarray], input_names: tuple[str, ...],
                 q_nodes: list[Any]) -> dict[str, tuple[str, np.ndarray]]:
    """ONNX QuantizeLinear node name -> (quantizer path, its integer output in torch), matched by scope."""
    recorded = _quantizer_outputs(qmodel, inputs, input_names)
    by_scope = {_norm(path): path for path in recorded}
    calls: dict[str, int] = {}
    out: dict[str, tuple[str, np.ndarray]] = {}
    for node in q_nodes:
        scope = _norm(node.name.rsplit("/", 1)[0]) if "/" in node.name else _norm(node.name)
        match = next((path for key, path in by_scope.items() if key and scope.endswith(key)), None)
        if match is None:
            continue
        k = calls.get(match, 0)
        calls[match] = k + 1
        if k < len(recorded[match]):
            out[node.name] = (match, recorded[match][k][0])
    return out


def compare_served(url: str, model: str, onnx_path: str | os.PathLike[str], inputs: dict[str, np.ndarray], *,
                   batch: int = 64, threads: int = 2) -> Agreement:
    """The model served at ``url`` (gRPC) against the same ONNX file under ONNX Runtime, on ``inputs``."""
    import onnx

    from .triton.client import infer

    first_output = onnx.load(os.fspath(onnx_path), load_external_data=False).graph.output[0].name
    runtime = run_onnx(onnx_path, inputs, optimized=True, threads=threads)[0]
    n = len(next(iter(inputs.values())))
    served_parts = []
    for s in range(0, n, batch):
        out = infer(url, model, {k: np.ascontiguousarray(v[s:s + batch]) for k, v in inputs.items()})
        served_parts.append(out[first_output])
    return compare(runtime, np.concatenate(served_parts))


