"""What a benchmark run measures: workloads, the INT8 variants of each, and the run's settings."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["AUTO", "BenchConfig", "DEFAULT_WORKLOADS", "Variant", "variants_for"]

AUTO = "auto"  # calibrator: pick the best on a validation split carved from the training data
DEFAULT_WORKLOADS = ("resnet18", "resnet50", "minilm")


@dataclass(frozen=True)
class Variant:
    """One quantplug INT8 model of a workload: ``key`` names it in the JSON and on the server."""

    key: str
    method: str
    calibrator: str  # a calibrator name or AUTO
    label: str
    cpu: str = "auto"  # the serving CPU the scheme is made for (quantplug.cpu): auto = this machine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def variants_for(workload: str, calibrator: str, *, other_scheme: bool = True) -> list[Variant]:
    """Static INT8 PTQ for every workload; transformers (``minilm``) also get dynamic INT8.

    The first variant is the workload's primary INT8 model (the one the targets and the peer
    comparison use): static PTQ in the scheme exact on this CPU. ``other_scheme`` adds the same PTQ
    in the other CPU scheme (quantplug.cpu), so the cost of exactness is measured: on a CPU without
    VNNI, full 8-bit weights (fast but saturating there); on a VNNI/AMX CPU, 7-bit weights (exact on
    every CPU).
    """
    from ..cpu import detect_cpu

    variants = [Variant("int8", "ptq", calibrator, "INT8 static PTQ")]
    if other_scheme:
        if detect_cpu().saturates:
            variants.append(Variant("int8_vnni_scheme", "ptq", calibrator,
                                    "INT8 PTQ, full 8-bit weights (VNNI scheme: saturates on this CPU)", "vnni"))
        else:
            variants.append(Variant("int8_avx2_scheme", "ptq", calibrator,
                                    "INT8 PTQ, 7-bit weights (AVX2 scheme: exact on every CPU)", "avx2"))
    if workload == "minilm":
        variants.append(Variant("int8_dynamic", "dynamic", "max", "INT8 dynamic"))
    return variants


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class BenchConfig:
    """Settings of one ``quantplug bench`` run (all recorded in ``bench.json``)."""

    output: Path = Path("bench-results")
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    batch: int = 8  # request batch, served and in-process
    pairs: int = 3  # A/B pairs per served comparison
    duration_s: float = 15.0  # seconds per locust run
    warmup_s: float = 2.0  # seconds at the start of each locust run left out of the statistics
    users: int = 2
    threads: int = field(default_factory=_default_threads)  # ONNX Runtime intra-op threads, in-process and served
    calibrator: str = AUTO
    calib_batches: int = 128
    calib_batch_size: int = 4
    select_batches: int = 4  # validation batches (training split) used to pick the best calibrator
    rounds: int = 7  # in-process: alternated rounds (A B C A B C ...)
    reps: int = 5  # in-process: timed runs per model per round (median)
    warmup: int = 3  # in-process: untimed runs per model first
    test_limit: int | None = None  # quality on the first N test items (None: the whole test set)
    serve_peer: bool = True  # also load-test FP32 vs the peer on the server
    quick: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.workloads = tuple(self.workloads)
        if not self.workloads:
            raise ConfigError("no workloads to benchmark; pass e.g. --workloads resnet18,resnet50,minilm")
        if len(set(self.workloads)) != len(self.workloads):
            raise ConfigError(f"--workloads lists a workload twice ({','.join(self.workloads)}); name each once")
        for name, value, low in (("batch", self.batch, 1), ("pairs", self.pairs, 1), ("users", self.users, 1),
                                 ("threads", self.threads, 1), ("calib batches", self.calib_batches, 1),
                                 ("calib batch size", self.calib_batch_size, 1), ("rounds", self.rounds, 1),
                                 ("reps", self.reps, 1), ("select batches", self.select_batches, 1)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"bad {name} {value!r}: use an integer >= {low}")
        if not self.duration_s >= 1:
            raise ConfigError(f"bad duration {self.duration_s!r}: use at least 1 second per locust run")
        if not 0 <= self.warmup_s < self.duration_s:
            raise ConfigError(f"bad warm-up {self.warmup_s!r}: use 0 <= warm-up < duration ({self.duration_s} s)")
        if self.test_limit is not None and self.test_limit < 2:
            raise ConfigError(f"bad test limit {self.test_limit!r}: use at least 2 test items (or None for all)")

    @classmethod
    def quick_config(cls, **overrides: Any) -> BenchConfig:
        """A smoke run of the whole flow: tiny durations, one pair, few repeats, few calibration batches."""
        settings: dict[str, Any] = {
            "pairs": 1, "duration_s": 3.0, "warmup_s": 0.5, "calibrator": "percentile", "calib_batches": 8,
            "calib_batch_size": 2, "rounds": 2, "reps": 2, "warmup": 1, "test_limit": 32, "quick": True,
        }
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output"] = str(self.output)
        d["workloads"] = list(self.workloads)
        return d
