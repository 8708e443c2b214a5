"""The ``tensorrt`` backend: a TensorRT engine (``model.plan``) built from the QDQ ONNX.

TensorRT 10 explicit quantization: the Q/DQ nodes carry the scales, so no calibrator runs here. The
engine gets one optimization profile over the batch dimension (1 .. max_batch_size, optimum at
``opt_batch``), a persistent timing cache (``timing_cache`` option, default next to the ONNX) and is
written as ``platform: "tensorrt_plan"`` with ``KIND_GPU``. Engines are specific to the GPU and the
TensorRT version: build on the deployment GPU (``deploy/build_engines.sh`` does it inside NVIDIA's
container). Where ``tensorrt`` does not import, ``options={"defer_build": True}`` writes ``model.onnx``
and ``build.json`` for that script instead of the plan.

The backend also owns TensorRT's rules over the exported QDQ graph (``check_onnx``, called by the
exporter for this target): INT8 (or INT4 weight) Q/DQ with all zero points 0; activation scales
per-tensor; weight scales per-channel on the output-channel axis (axis 0 for Conv and Gemm(transB=1),
axis 1 for a MatMul's [in, out] weight) or blocked INT4; opset >= 13 for per-channel INT8 and >= 21 for
INT4. Each violation raises :class:`~quantplug.errors.ExportError` naming the node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantplug.errors import ConfigError, ExportError
from quantplug.registry import Scheme

from ._common import copy_onnx, set_kind

__all__ = ["TensorRTBackend", "build_engine", "check_tensorrt_rules", "tensorrt_unavailable_reason"]


def _opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def check_tensorrt_rules(model: Any) -> None:
    """Raise ExportError on the first Q/DQ node TensorRT would reject or mis-execute."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    opset = _opset(model)
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        scale = inits.get(node.input[1]) if len(node.input) > 1 else None
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        data = inits.get(node.input[0])
        is_weight = node.op_type == "DequantizeLinear" and data is not None
        qtype = (data.data_type if data is not None and is_weight
                 else (zp.data_type if zp is not None else onnx.TensorProto.UINT8))
        if node.op_type == "DequantizeLinear" and not is_weight and zp is None:
            continue  # activation DQ typed by its Q, checked there
        if zp is not None:
            if np.any(numpy_helper.to_array(zp) != 0):
                raise ExportError(f"{where}: zero point is not 0; TensorRT needs symmetric quantization "
                                  "(export with --target tensorrt from a model prepared for tensorrt)")
        if is_weight and data is not None and data.data_type == onnx.TensorProto.INT32:
            continue  # an INT32 bias: TensorRT wants float biases, but a DQ'd bias is still legal
        if qtype not in (onnx.TensorProto.INT8, onnx.TensorProto.INT4):
            raise ExportError(f"{where}: quantized type {onnx.TensorProto.DataType.Name(qtype)} is not INT8/INT4; "
                              "TensorRT executes INT8 (activations and weights) and INT4 (weights only)")
        if qtype == onnx.TensorProto.INT4:
            if not is_weight:
                raise ExportError(f"{where}: INT4 activations are not supported by TensorRT; use 8-bit activations")
            if opset < 21:
                raise ExportError(f"{where}: INT4 weights need opset >= 21, the model has {opset}")
        numel = int(np.prod(scale.dims)) if scale is not None and len(scale.dims) else 1
        if not is_weight:
            if numel != 1:
                raise ExportError(f"{where}: activation scale has {numel} values; TensorRT needs per-tensor "
                                  "activation scales")
            continue
        if numel == 1:
            continue  # per-tensor weight: legal
        if opset < 13:
            raise ExportError(f"{where}: per-channel weight scales need opset >= 13, the model has {opset}")
        axis = int(attrs.get("axis", 1))
        users = consumers.get(node.output[0], [])
        for user in users:
            if user.op_type == "MatMul":
                expected = 1 if "block_size" not in attrs else 0
            elif user.op_type in ("Conv", "Gemm", "ConvTranspose", "Gather"):
                expected = 0 if "block_size" not in attrs else 1
                if user.op_type == "Gemm":
                    trans_b = any(a.name == "transB" and a.i for a in user.attribute)
                    expected = (0 if trans_b else 1) if "block_size" not in attrs else (1 if trans_b else 0)
            else:
                continue
            if axis != expected:
                raise ExportError(f"{where}: weight scales are on axis {axis} but TensorRT needs the output-"
                                  f"channel axis ({expected}) for its {user.op_type} consumer {user.name!r}")


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT imports and sees a GPU; otherwise why not (for errors and test skips)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return f"tensorrt does not import ({e}); pip install 'quantplug[tensorrt]' on a machine with an NVIDIA GPU"
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as e:  # TypeError/RuntimeError when CUDA has no device
        return f"TensorRT {trt.__version__} found no usable GPU ({e})"
    if builder is None:
        return f"TensorRT {trt.__version__} found no usable GPU"
    return None


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    max_batch: int,
    opt_batch: int | None = None,
    min_batch: int = 1,
    timing_cache: str | Path | None = None,
    workspace_bytes: int = 1 << 30,
    fp16: bool = True,
) -> Path:
    """Build ``plan_path`` from a QDQ ONNX with the TensorRT 10 Python API; returns the plan path."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise ExportError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not 1 <= min_batch <= max_batch:
        raise ConfigError(f"batch profile min={min_batch} max={max_batch} is empty; need 1 <= min <= max")
    opt_batch = min(max(opt_batch or max_batch, min_batch), max_batch)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"node {err.node_name() or err.node()} ({err.node_operator()}): {err.desc()}")
        raise ExportError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {'; '.join(errors)}; "
                          "change or remove the unsupported layer, or serve with backend onnxruntime")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.set_flag(trt.BuilderFlag.INT8)  # honour the Q/DQ nodes (explicit quantization)
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)  # for the layers left unquantized
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if not shape or shape[0] != -1:
            raise ExportError(f"input {tensor.name!r} has shape {shape} without a dynamic batch dim; "
                              "export with a dynamic batch axis")
        if any(d == -1 for d in shape[1:]):
            raise ExportError(f"input {tensor.name!r} has dynamic non-batch dims {shape}; fix them at export "
                              "(TensorRT needs a profile for every dynamic dim)")
        profile.set_shape(tensor.name, [min_batch, *shape[1:]], [opt_batch, *shape[1:]], [max_batch, *shape[1:]])
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else onnx_path.with_suffix(".timing.cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} "
                          "(see the TensorRT log above for the layer); serve with backend onnxruntime meanwhile")
    tmp = plan_path.with_suffix(".plan.tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan_path)
    cache_tmp = cache_path.with_suffix(".tmp")
    cache_tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    cache_tmp.replace(cache_path)
    return plan_path


@dataclass(frozen=True)
class TensorRTBackend:
    scheme: Scheme
    name: str = "tensorrt"
    description: str = "TensorRT 10+ explicit quantization: symmetric INT8; writes model.plan (KIND_GPU)"
    flavours: tuple[str, ...] = ("plan",)

    def check_onnx(self, model: Any) -> None:
        """TensorRT's explicit-quantization rules over the exported QDQ graph (see the module docstring)."""
        check_tensorrt_rules(model)

    def configure(self, config: Any, *, flavour: str, kind: str | None, threads: int | None,
                  options: dict[str, Any]) -> None:
        if flavour not in self.flavours:
            raise ConfigError(f"unknown flavour {flavour!r} for backend tensorrt; valid: plan")
        if kind not in (None, "KIND_GPU"):
            raise ConfigError(f"backend tensorrt runs on GPU only, not {kind}; drop kind or use KIND_GPU")
        if config.max_batch_size < 1:
            raise ConfigError("backend tensorrt needs max_batch_size >= 1 (the engine's profile spans the batch "
                              "dimension); export with a dynamic batch axis")
        config.platform = "tensorrt_plan"
        config.backend = "tensorrt"
        set_kind(config, "KIND_GPU")

    def write_model(self, version_dir: Path, onnx_path: Path, config: Any, *, flavour: str,
                    options: dict[str, Any]) -> None:
        max_batch = max(config.max_batch_size, 1)
        preferred = list(config.dynamic_batching.preferred_batch_size)
        opt_batch = int(options.get("opt_batch") or (max(preferred) if preferred else max_batch))
        if options.get("defer_build") and tensorrt_unavailable_reason():
            copy_onnx(onnx_path, version_dir)
            spec = {"onnx": "model.onnx", "plan": "model.plan", "min_batch": 1, "opt_batch": opt_batch,
                    "max_batch": max_batch, "fp16": bool(options.get("fp16", True)),
                    "inputs": {t.name: list(t.dims) for t in config.input}}  # per-sample dims
            (version_dir / "build.json").write_text(json.dumps(spec, indent=2) + "\n")
            return
        build_engine(onnx_path, version_dir / "model.plan", max_batch=max_batch, opt_batch=opt_batch,
                     timing_cache=options.get("timing_cache"), fp16=bool(options.get("fp16", True)),
                     workspace_bytes=int(options.get("workspace_bytes", 1 << 30)))
