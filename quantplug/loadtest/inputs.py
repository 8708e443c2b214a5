"""What one request sends: input names, full shapes (batch included) and Triton datatypes.

Shared by the orchestrator (to check a model before starting locust) and the locust user (to build its
request), so both resolve shapes the same way: from the server's model metadata and config, with
``--input-shape`` filling dynamic dimensions, or from an ``.npz`` file of real inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["InputSpec", "parse_input_shape", "resolve_inputs", "make_arrays", "load_npz"]

# Triton datatype -> numpy dtype (BYTES is not generated: text models need real inputs via an .npz file).
_NP_DTYPES = {
    "FP32": np.float32, "FP16": np.float16, "FP64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "BOOL": np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    """One model input as one request sends it: ``shape`` includes the batch dimension."""

    name: str
    shape: tuple[int, ...]
    datatype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "datatype": self.datatype}


def parse_input_shape(text: str | None) -> dict[str, tuple[int, ...]] | tuple[int, ...] | None:
    """Parse ``--input-shape``: ``3x224x224`` (every input) or ``input_ids:128,attention_mask:128``.

    Shapes exclude the batch dimension when the model batches (``max_batch_size > 0``).
    """
    if text is None or not text.strip():
        return None

    def dims(part: str) -> tuple[int, ...]:
        try:
            out = tuple(int(d) for d in part.strip().lower().replace(",", "x").split("x") if d.strip())
        except ValueError:
            out = ()
        if not out or any(d <= 0 for d in out):
            raise ConfigError(f"bad input shape {part!r}: use positive integers joined by 'x', e.g. 3x224x224")
        return out

    if ":" not in text:
        return dims(text)
    shapes: dict[str, tuple[int, ...]] = {}
    for item in text.split(","):
        name, sep, shape = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"bad input shape {item!r}: use NAME:DIMS pairs, e.g. input_ids:128,mask:128")
        shapes[name.strip()] = dims(shape)
    return shapes


def resolve_inputs(
    metadata_inputs: Sequence[Mapping[str, Any]],
    max_batch_size: int,
    batch_size: int,
    input_shape: dict[str, tuple[int, ...]] | tuple[int, ...] | None = None,
    model: str = "model",
) -> list[InputSpec]:
    """Full request shapes from the model's metadata inputs (``name``, ``datatype``, ``shape``).

    Triton's metadata shape includes a leading ``-1`` when the model batches; the request shape is then
    ``[batch_size, *dims]``. Dynamic dimensions (``-1``) must be given by ``input_shape``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if max_batch_size > 0 and batch_size > max_batch_size:
        raise ConfigError(f"batch size {batch_size} exceeds model {model!r}'s max_batch_size {max_batch_size}: "
                          f"use --batch-size <= {max_batch_size}")
    if max_batch_size == 0 and batch_size != 1:
        raise ConfigError(f"model {model!r} does not batch (max_batch_size 0): use --batch-size 1")
    specs = []
    for inp in metadata_inputs:
        name, datatype = str(inp["name"]), str(inp["datatype"])
        if datatype not in _NP_DTYPES:
            raise ConfigError(f"input {name!r} of model {model!r} has datatype {datatype}, which random inputs "
                              f"cannot fill: pass real inputs with --inputs FILE.npz")
        dims = [int(d) for d in inp["shape"]]
        if max_batch_size > 0:
            dims = dims[1:]
        given = input_shape.get(name) if isinstance(input_shape, dict) else input_shape
        if given is not None:
            if len(given) != len(dims) or any(d not in (-1, g) for d, g in zip(dims, given, strict=True)):
                raise ConfigError(f"input shape {'x'.join(map(str, given))} does not fit input {name!r} of "
                                  f"model {model!r} with dims {dims} (batch dimension excluded)")
            dims = list(given)
        if any(d < 0 for d in dims):
            raise ConfigError(f"input {name!r} of model {model!r} has dynamic dims {dims}: "
                              f"give them with --input-shape, e.g. {name}:" + "x".join("128" for _ in dims))
        shape = (batch_size, *dims) if max_batch_size > 0 else tuple(dims)
        specs.append(InputSpec(name, shape, datatype))
    if isinstance(input_shape, dict):
        unknown = sorted(set(input_shape) - {s.name for s in specs})
        if unknown:
            raise ConfigError(f"--input-shape names {unknown} that model {model!r} does not have: "
                              f"its inputs are {[s.name for s in specs]}")
    return specs


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"inputs file {p} does not exist: pass an .npz of arrays keyed by input name")
    with np.load(p, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


def make_arrays(
    specs: Sequence[InputSpec],
    rng: np.random.Generator,
    real: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One request's arrays: rows of ``real`` when given (tiled to the batch), otherwise random values.

    Random floats are standard normal; random integers and booleans are 0 or 1, valid for token ids,
    masks and labels alike. Only the shape and dtype matter for timing.
    """
    arrays = {}
    for s in specs:
        dtype = _NP_DTYPES[s.datatype]
        if real is not None and s.name in real:
            src = np.asarray(real[s.name]).astype(dtype, copy=False)
            if src.shape[1:] != s.shape[1:] or src.shape[0] < 1:
                raise ConfigError(f"inputs file array {s.name!r} has shape {src.shape}; the request needs "
                                  f"rows of shape {s.shape[1:]}")
            reps = -(-s.shape[0] // src.shape[0])
            arrays[s.name] = np.ascontiguousarray(np.concatenate([src] * reps)[: s.shape[0]])
        elif np.issubdtype(dtype, np.floating):
            arrays[s.name] = rng.standard_normal(s.shape).astype(dtype)
        else:
            arrays[s.name] = rng.integers(0, 2, size=s.shape).astype(dtype)
    return arrays
