"""What a quantized ONNX file was made for, stored in the file itself (``metadata_props``).

``quantplug.scheme`` (target scheme name), ``quantplug.cpu`` (the serving CPU ISA it is exact on, see
:mod:`quantplug.cpu`; empty when the scheme does not depend on the CPU) and ``quantplug.weight_qmax``
(the 8-bit weight range). The repository writer copies them into the Triton config's parameters, and
``repo add``/``serve`` compare them with the CPU that will run the model.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["read_metadata", "stamp_scheme", "cpu_mismatch"]

_PREFIX = "quantplug."


def stamp_scheme(proto: Any, scheme: Any) -> None:
    """Record ``scheme``'s name, serving CPU and weight range in ``proto.metadata_props``."""
    values = {"scheme": scheme.name, "cpu": scheme.cpu or "", "weight_qmax": str(scheme.weight_range(8))}
    keep = [p for p in proto.metadata_props if not p.key.startswith(_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = _PREFIX + key, value


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``quantplug.*`` metadata of an ONNX file (without loading its weights); {} when none."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {p.key[len(_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(_PREFIX)}


def cpu_mismatch(made_for: str | None, weight_qmax: int | None, serving_isa: str) -> str | None:
    """A one-line warning when a model with full-range 8-bit weights will run on a saturating CPU."""
    from ..cpu import saturates

    if not made_for or weight_qmax is None or weight_qmax <= 64 or not saturates(serving_isa):
        return None
    return (f"made for a {made_for} CPU (8-bit weights [-{weight_qmax}, {weight_qmax}]) but this CPU is "
            f"{serving_isa} without VNNI: ONNX Runtime's integer kernels saturate and the served outputs will "
            "differ from the calibrated model; re-quantize with --cpu avx2 (or auto on this machine)")
