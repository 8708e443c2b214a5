"""Read the serving signature (tensor names, Triton dtypes, dims with -1 where dynamic) from an ONNX file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import RepositoryError

__all__ = ["ONNX_TO_TRITON", "TensorSpec", "read_signature"]

# onnx.TensorProto.DataType value -> Triton ModelConfig DataType name.
ONNX_TO_TRITON: dict[int, str] = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
    13: "TYPE_UINT64", 16: "TYPE_BF16",
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, Triton dtype name and full shape (-1 for a dynamic dim)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def _spec(value: object, path: Path) -> TensorSpec:
    name = value.name  # type: ignore[attr-defined]
    ttype = value.type.tensor_type  # type: ignore[attr-defined]
    if ttype.elem_type not in ONNX_TO_TRITON:
        raise RepositoryError(
            f"{path}: tensor {name!r} has ONNX element type {ttype.elem_type}, which Triton cannot serve; "
            "cast it to a supported type before export"
        )
    if not ttype.HasField("shape"):
        raise RepositoryError(f"{path}: tensor {name!r} has no shape (rank unknown); export with a fixed rank")
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in ttype.shape.dim)
    return TensorSpec(name, ONNX_TO_TRITON[ttype.elem_type], dims)


def read_signature(onnx_path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """``(inputs, outputs)`` of the ONNX graph at ``onnx_path``; initializers listed as inputs are skipped."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise RepositoryError(f"ONNX model {path} does not exist; export the model first (quantplug quantize)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends
        raise RepositoryError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e}); re-export it") from e
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_spec(v, path) for v in model.graph.input if v.name not in initializers]
    outputs = [_spec(v, path) for v in model.graph.output]
    if not inputs or not outputs:
        raise RepositoryError(f"{path}: the graph has no inputs or no outputs; re-export the model")
    return inputs, outputs
