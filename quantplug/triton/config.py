"""The Triton ``ModelConfig`` protobuf: built from an ONNX signature, parsed from ``config.pbtxt``, validated.

``tritonclient``'s protobuf rejects unknown fields and bad enum names but accepts semantic nonsense (a
negative ``max_batch_size``, an unknown platform, dims of 0), so :func:`validate_config` checks the
meaning: names match the model's tensors, dims are valid, batching is consistent, files are present.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RepositoryError
from .onnx_io import TensorSpec

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = [
    "KNOWN_PLATFORMS",
    "build_config",
    "config_to_text",
    "expected_files",
    "load_config",
    "parse_config",
    "validate_config",
]

# platform -> (backend it implies, default model file name in a version folder)
KNOWN_PLATFORMS: dict[str, tuple[str, str]] = {
    "onnxruntime_onnx": ("onnxruntime", "model.onnx"),
    "tensorrt_plan": ("tensorrt", "model.plan"),
    "pytorch_libtorch": ("pytorch", "model.pt"),
    "tensorflow_savedmodel": ("tensorflow", "model.savedmodel"),
    "tensorflow_graphdef": ("tensorflow", "model.graphdef"),
    "openvino": ("openvino", "model.xml"),
    "ensemble": ("", ""),
}
_BACKEND_FILES = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.plan",
                  "pytorch": "model.pt", "openvino": "model.xml"}


def _pb() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def build_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_delay_us: int = 100,
    instance_count: int = 1,
    kind: str = "KIND_CPU",
    warmup: bool = True,
    latest_versions: int = 1,
) -> ModelConfig:
    """A ``ModelConfig`` for an ONNX signature; with ``max_batch_size > 0`` the first dim is the batch."""
    pb = _pb()
    if max_batch_size < 0:
        raise RepositoryError(f"max_batch_size={max_batch_size} is negative; use 0 (no batching) or a positive size")
    if instance_count < 1:
        raise RepositoryError(f"instance_count={instance_count} must be at least 1")
    config = pb.ModelConfig(name=name, max_batch_size=max_batch_size)
    for spec, field in [(s, config.input) for s in inputs] + [(s, config.output) for s in outputs]:
        dims = list(spec.shape)
        if max_batch_size > 0:
            if not dims or dims[0] != -1:
                raise RepositoryError(
                    f"model {name!r}: tensor {spec.name!r} has shape {dims} with no dynamic batch (first) "
                    f"dimension, so max_batch_size={max_batch_size} cannot apply; export with a dynamic batch "
                    "axis or pass max_batch_size=0"
                )
            dims = dims[1:]
        entry = field.add(name=spec.name, data_type=pb.DataType.Value(spec.dtype), dims=dims)
        if max_batch_size > 0 and not dims:
            entry.dims.append(1)
            entry.reshape.SetInParent()  # a [batch] tensor: Triton needs dims [1] reshaped to []
    if dynamic_batching and max_batch_size > 0:
        db = config.dynamic_batching
        db.max_queue_delay_microseconds = max_queue_delay_us
        db.preferred_batch_size.extend(list(preferred_batch_sizes or []))
    config.instance_group.add(count=instance_count, kind=pb.ModelInstanceGroup.Kind.Value(kind))
    config.version_policy.latest.num_versions = latest_versions
    if warmup and all(d > 0 for t in config.input for d in t.dims):
        _add_warmup(config, inputs)  # a dynamic non-batch dim has no size known to be valid: no warm-up
    return config


def _add_warmup(config: ModelConfig, inputs: Sequence[TensorSpec]) -> None:
    """One warm-up request at batch 1, so the first client does not pay for lazy initialisation."""
    pb = _pb()
    sample = config.model_warmup.add(name="warmup_batch1", batch_size=1 if config.max_batch_size > 0 else 0,
                                     count=1)
    # Zeros, never random_data: Triton fills that with random bytes, which include NaN/Inf bit patterns
    # (the served model rejects those), and a warm-up request that fails makes Triton 2.51 exit with SIGSEGV
    # (seen). Zeros are always in range, token ids and masks included.
    for tensor in config.input:
        data = pb.ModelWarmup.Input(data_type=tensor.data_type, dims=list(tensor.dims), zero_data=True)
        sample.inputs[tensor.name].CopyFrom(data)


def config_to_text(config: ModelConfig) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(config))


def parse_config(text: str, source: str = "config.pbtxt") -> ModelConfig:
    """Parse ``config.pbtxt`` text; an unknown field or bad enum raises naming ``source:line:column``."""
    from google.protobuf import text_format

    config = _pb().ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        where = f"{source}:{line}:{col}" if line is not None else source
        msg = str(e).split(" : ", 1)[-1]
        raise RepositoryError(f"{where}: {msg} (see Triton's model_config.proto for valid fields)") from e
    return config


def load_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if not path.is_file():
        raise RepositoryError(f"{path} is missing; every model folder needs a config.pbtxt")
    return parse_config(path.read_text(), str(path))


def _kind_name(config: ModelConfig) -> str:
    return config.platform or config.backend


def expected_files(config: ModelConfig) -> list[str]:
    """The files each version folder must hold for this config's platform/backend (best known)."""
    files = []
    if config.default_model_filename:
        files.append(config.default_model_filename)
    elif config.platform in KNOWN_PLATFORMS and KNOWN_PLATFORMS[config.platform][1]:
        files.append(KNOWN_PLATFORMS[config.platform][1])
    elif config.backend in _BACKEND_FILES:
        files.append(_BACKEND_FILES[config.backend])
    onnx_file = config.parameters["onnx_file"].string_value if "onnx_file" in config.parameters else ""
    if config.backend == "python" and onnx_file:
        files.append(onnx_file)
    return files


def _check_tensors(config: ModelConfig, problems: list[str]) -> None:
    pb = _pb()
    for kind, tensors in (("input", config.input), ("output", config.output)):
        if not tensors and config.platform != "ensemble":
            problems.append(f"no {kind} tensors; add at least one {kind} {{ name, data_type, dims }}")
        seen: set[str] = set()
        for t in tensors:
            if not t.name:
                problems.append(f"an {kind} has no name")
            if t.name in seen:
                problems.append(f"{kind} {t.name!r} is listed twice")
            seen.add(t.name)
            if t.data_type == pb.DataType.TYPE_INVALID:
                problems.append(f"{kind} {t.name!r} has no data_type (e.g. TYPE_FP32)")
            bad = [d for d in t.dims if d == 0 or d < -1]
            if bad:
                problems.append(f"{kind} {t.name!r} has invalid dims {list(t.dims)}: each dim must be >= 1 or -1")
            if not t.dims and config.max_batch_size == 0 and not t.HasField("reshape"):
                problems.append(f"{kind} {t.name!r} has no dims; give its shape (use -1 for a dynamic dim)")


def _check_signature(config: ModelConfig, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                     problems: list[str]) -> None:
    pb = _pb()
    batched = config.max_batch_size > 0
    for kind, tensors, specs in (("input", config.input, inputs), ("output", config.output, outputs)):
        by_name = {s.name: s for s in specs}
        names = {t.name for t in tensors}
        if kind == "input" and names != set(by_name):
            problems.append(f"config inputs {sorted(names)} do not match the model's inputs {sorted(by_name)}")
        unknown = names - set(by_name)
        if kind == "output" and unknown:
            problems.append(f"config outputs {sorted(unknown)} are not outputs of the model "
                            f"(it has {sorted(by_name)})")
        for t in tensors:
            spec = by_name.get(t.name)
            if spec is None:
                continue
            if pb.DataType.Name(t.data_type) != spec.dtype:
                problems.append(f"{kind} {t.name!r} is {pb.DataType.Name(t.data_type)} in the config but "
                                f"{spec.dtype} in the model")
            shape = list(spec.shape)
            if batched:
                if not shape or shape[0] != -1:
                    problems.append(f"{kind} {t.name!r} has no dynamic batch dim in the model (shape {shape}) "
                                    f"but max_batch_size={config.max_batch_size}; set max_batch_size: 0")
                    continue
                shape = shape[1:]
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            ok = len(dims) == len(shape) and all(m == -1 or m == d for d, m in zip(dims, shape, strict=True))
            if not ok:
                problems.append(f"{kind} {t.name!r} has dims {list(t.dims)} in the config but the model's "
                                f"{'per-sample ' if batched else ''}shape is {shape}")


def validate_config(
    config: ModelConfig,
    *,
    folder_name: str | None = None,
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
    version_dirs: Sequence[Path] = (),
) -> list[str]:
    """Semantic problems of ``config`` (empty when fine); checks files in ``version_dirs`` when given."""
    pb = _pb()
    problems: list[str] = []
    if not config.name:
        problems.append("name is empty")
    elif folder_name is not None and config.name != folder_name:
        problems.append(f"name {config.name!r} differs from its folder {folder_name!r}; make them equal")
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size is {config.max_batch_size}; use 0 (no batching) or a positive size")
    if not config.platform and not config.backend:
        problems.append('neither platform nor backend is set (e.g. backend: "python" or platform: '
                        '"onnxruntime_onnx")')
    if config.platform:
        if config.platform not in KNOWN_PLATFORMS:
            problems.append(f"unknown platform {config.platform!r}; valid: {', '.join(sorted(KNOWN_PLATFORMS))}")
        elif config.backend and KNOWN_PLATFORMS[config.platform][0] not in ("", config.backend):
            problems.append(f"platform {config.platform!r} needs backend "
                            f"{KNOWN_PLATFORMS[config.platform][0]!r}, not {config.backend!r}")
    _check_tensors(config, problems)
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append("dynamic_batching needs max_batch_size > 0")
        for size in config.dynamic_batching.preferred_batch_size:
            if size < 1 or (config.max_batch_size > 0 and size > config.max_batch_size):
                problems.append(f"preferred_batch_size {size} is outside 1..max_batch_size "
                                f"({config.max_batch_size})")
    for group in config.instance_group:
        if group.count < 0:
            problems.append(f"instance_group count {group.count} is negative")
        if config.platform == "tensorrt_plan" and group.kind == pb.ModelInstanceGroup.KIND_CPU:
            problems.append("a tensorrt_plan model runs on GPU only; use instance_group kind KIND_GPU")
    if config.version_policy.HasField("latest") and config.version_policy.latest.num_versions < 1:
        problems.append("version_policy latest num_versions must be at least 1")
    input_names = {t.name for t in config.input}
    for sample in config.model_warmup:
        if config.max_batch_size > 0 and not 1 <= sample.batch_size <= config.max_batch_size:
            problems.append(f"warm-up {sample.name!r} batch_size {sample.batch_size} is outside "
                            f"1..max_batch_size ({config.max_batch_size})")
        for name, data in sample.inputs.items():
            if name not in input_names:
                problems.append(f"warm-up {sample.name!r} feeds {name!r}, which is not an input")
            if any(d < 1 for d in data.dims):
                problems.append(f"warm-up {sample.name!r} input {name!r} needs concrete dims, got {list(data.dims)}")
    if inputs is not None and outputs is not None:
        _check_signature(config, inputs, outputs, problems)
    for vdir in version_dirs:
        for fname in expected_files(config):
            if not (vdir / fname).exists():
                problems.append(f"{vdir / fname} is missing ({_kind_name(config)} needs it)")
    return problems
