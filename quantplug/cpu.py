"""What the serving CPU can do in integer arithmetic, and what that means for the quantization scheme.

ONNX Runtime's x86 U8S8 integer kernels (UINT8 activations times INT8 weights, the fast CPU scheme) add
each pair of ``u8 x s8`` products in 16 bits on CPUs without VNNI (AVX2's and AVX-512BW's
``VPMADDUBSW``), and that sum saturates: ``255 * 127 * 2 = 64,770`` does not fit in ``32,767``. With
VNNI (AVX-512 VNNI or AVX-VNNI: ``VPDPBUSD`` accumulates in 32 bits), AMX or Arm's dot-product
instructions there is no such limit. On a saturating CPU the integer model silently differs from the
model that was calibrated and trained (measured: 4.7 logits off on mnist-resnet, top-1 agreement with
FP32 falling from 75% to 52% on a random-init ResNet-18).

The exact answer is a narrower weight range: 7-bit weights (``[-64, 64]``, ONNX Runtime's own
``reduce_range``) keep every pair sum within ``255 * 64 * 2 = 32,640``. quantplug's onnxruntime scheme uses that range when the serving CPU is one of
the saturating ISAs, and ``prepare`` obeys it from the start, so QAT/QAD train exactly what will run. A
model made with the narrow range is exact on every CPU; one made with the full range is exact only
where the CPU has VNNI/AMX.

ISA names (``--cpu``): ``auto`` (this machine), ``avx2`` (AVX2, no VNNI), ``avx512`` (AVX-512 without
VNNI), ``vnni`` (AVX-512 VNNI or AVX-VNNI), ``amx`` (AMX-INT8), ``arm`` (Arm with dot product).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["CPU_CHOICES", "CpuInfo", "describe_scheme_need", "detect_cpu", "resolve_cpu", "saturates"]

# The serving CPUs a scheme can be made for; True where U8S8 pair sums saturate (no VNNI/AMX/dotprod).
_SATURATES: dict[str, bool] = {"avx2": True, "avx512": True, "vnni": False, "amx": False, "arm": False,
                               "generic": False}
CPU_CHOICES = ("auto", "avx2", "avx512", "vnni", "amx", "arm")
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True)
class CpuInfo:
    """This machine's CPU: its model name, core count, INT8-relevant flags and the ISA they amount to."""

    model: str
    cores: int
    int8_flags: tuple[str, ...]
    isa: str

    @property
    def saturates(self) -> bool:
        return saturates(self.isa)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "cores": self.cores, "int8_flags": list(self.int8_flags), "isa": self.isa,
                "u8s8_saturates": self.saturates}


def isa_from_flags(flags: set[str], machine: str = "x86_64") -> str:
    """The integer ISA class that ``/proc/cpuinfo`` flags amount to."""
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if machine in ("aarch64", "arm64"):
        return "arm" if "asimddp" in flags else "generic"
    return "generic"


@lru_cache(maxsize=1)
def detect_cpu() -> CpuInfo:
    """Read ``/proc/cpuinfo`` (model name and flags) once per process."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    isa = isa_from_flags(flags, platform.machine())
    return CpuInfo(model, os.cpu_count() or 1, tuple(f for f in INT8_FLAGS if f in flags), isa)


def resolve_cpu(cpu: str | None) -> str:
    """``auto``/None -> this machine's ISA; a named ISA is checked and returned."""
    if cpu in (None, "", "auto"):
        return detect_cpu().isa
    if cpu not in _SATURATES:
        raise ConfigError(f"unknown CPU {cpu!r}; valid: {', '.join(CPU_CHOICES)} (the serving CPU's integer "
                          "instructions; `quantplug env` shows this machine's)")
    return cpu


def saturates(isa: str) -> bool:
    """Whether ONNX Runtime's U8S8 kernels saturate 16-bit pair sums on this ISA."""
    return _SATURATES.get(isa, False)


def describe_scheme_need(info: CpuInfo | None = None) -> str:
    """One sentence for ``quantplug env``: which onnxruntime weight range this CPU needs, and why."""
    info = info or detect_cpu()
    if info.saturates:
        return (f"{info.isa}: no VNNI/AMX, so ONNX Runtime's U8S8 kernels sum u8 x s8 pairs in 16 bits and "
                "saturate with full 8-bit weights; quantplug uses 7-bit weights [-64, 64] here (exact)")
    return (f"{info.isa}: integer products accumulate in 32 bits; full 8-bit weights [-127, 127] are exact "
            "(a model made here needs a VNNI/AMX CPU to stay exact; --cpu avx2 makes one exact everywhere)")
