"""The ``openvino`` backend: the exported QDQ ONNX run by OpenVINO's CPU plugin.

Flavours:
- ``embedded`` (default): a python-backend model (``model.py`` + ``model.onnx``) that compiles the ONNX
  with OpenVINO inside the bundled ``tritonserver`` (which has only the python backend). Options:
  ``threads`` (``INFERENCE_NUM_THREADS``, 0 = cores / instances), ``precision`` (``f32`` default: the
  FP32 parts run in FP32, never bf16/f16, so the model stays equal to the fake-quant one).
- ``container``: ``backend: "openvino"`` for Triton's native OpenVINO backend (NVIDIA's container,
  CPU only), reading ``model.onnx`` directly (``default_model_filename``); see deploy/openvino.md.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantplug.errors import ConfigError
from quantplug.registry import Scheme

from .pbmodel import MODEL_PY

__all__ = ["OpenVinoBackend", "PRECISIONS"]

PRECISIONS = ("f32", "bf16", "f16")


def _param(config: Any, key: str, value: object) -> None:
    config.parameters[key].string_value = str(value)


def _cpu_only(config: Any, kind: str | None) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    if kind not in (None, "KIND_CPU"):
        raise ConfigError(f"backend openvino runs on the CPU here, not {kind}; drop --kind or use KIND_CPU")
    if not config.instance_group:
        config.instance_group.add(count=1)
    for group in config.instance_group:
        group.kind = pb.ModelInstanceGroup.KIND_CPU


def _copy_onnx(onnx_path: Path, version_dir: Path) -> None:
    """``model.onnx`` and any external-data files it references, into ``version_dir``."""
    import onnx

    shutil.copyfile(onnx_path, version_dir / "model.onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                dst = version_dir / entry.value
                if entry.key == "location" and not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(onnx_path.parent / entry.value, dst)


@dataclass(frozen=True)
class OpenVinoBackend:
    scheme: Scheme
    name: str = "openvino"
    description: str = ("OpenVINO (CPU): UINT8 activations, INT8 per-channel weights (7-bit without VNNI); "
                        "flavours embedded (python backend) and container (Triton's openvino backend)")
    flavours: tuple[str, ...] = ("embedded", "container")

    def configure(self, config: Any, *, flavour: str, kind: str | None, threads: int | None,
                  options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - {"precision"})
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for backend openvino; valid: precision")
        precision = str(options.get("precision", "f32"))
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r} for backend openvino; valid: {', '.join(PRECISIONS)}")
        if threads is not None and threads < 0:
            raise ConfigError(f"bad thread count {threads}; use 0 (auto) or more")
        _cpu_only(config, kind)
        if flavour == "embedded":
            config.backend = "python"
            _param(config, "onnx_file", "model.onnx")
            _param(config, "runtime", "openvino")
            _param(config, "inference_num_threads", threads or 0)
            _param(config, "inference_precision", precision)
        elif flavour == "container":
            config.backend = "openvino"
            config.default_model_filename = "model.onnx"  # OpenVINO reads QDQ ONNX directly
            _param(config, "NUM_STREAMS", 1)  # one stream per instance: Triton's instances give concurrency
            _param(config, "PERFORMANCE_HINT", "LATENCY")
            if threads:
                _param(config, "INFERENCE_NUM_THREADS", threads)
            if precision != "f32":
                raise ConfigError("Triton's openvino backend takes no precision parameter; the container "
                                  "flavour runs f32 (drop the precision option)")
        else:
            raise ConfigError(f"unknown flavour {flavour!r} for backend openvino; valid: {', '.join(self.flavours)}")

    def write_model(self, version_dir: Path, onnx_path: Path, config: Any, *, flavour: str,
                    options: dict[str, Any]) -> None:
        _copy_onnx(Path(onnx_path), version_dir)
        if flavour == "embedded":
            shutil.copyfile(MODEL_PY, version_dir / "model.py")

    # In-process runtime and peer, for `quantplug bench` and parity checks (openvino imported when called).
    peer_tool: str = "nncf.quantize"

    def session(self, path: str | Path, threads: int) -> Any:
        """A compiled model with ONNX Runtime's ``run(output_names, feeds)`` shape."""
        from .runtime import OpenVinoSession

        return OpenVinoSession(path, threads)

    def quantize_peer(self, fp32_onnx: str | Path, out_dir: str | Path, feeds: list[dict[str, Any]]) -> Path:
        """NNCF's INT8 of the FP32 ONNX, calibrated on ``feeds``: ``out_dir/model.xml`` (+ ``.bin``)."""
        import os
        import tempfile

        from .runtime import nncf_quantize

        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            nncf_quantize(fp32_onnx, tmp / "model.xml", feeds)
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out_dir / "model.xml"
