"""Which method to use for an accuracy budget: the decision flowchart as a small table of rules.

The rules are data (:data:`RULES`, first match wins) so that ``quantplug advise`` prints them, the tests
check each branch, and ``quantplug tune`` explains where its search went further than the advice.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from ..registry import MethodCost

__all__ = [
    "MIXED_COST",
    "MethodCost",
    "RULES",
    "Advice",
    "Rule",
    "Situation",
    "advise",
    "infer_model_kind",
    "method_costs",
]

Priority = Literal["accuracy", "speed"]
ModelKind = Literal["cnn", "transformer", "linear-heavy"]
PRIORITIES = ("accuracy", "speed")
MODEL_KINDS = ("cnn", "transformer", "linear-heavy")
TIGHT_TOLERANCE = 1.0  # points: under this, calibration alone is rarely enough; train with the quantizers


@dataclass(frozen=True)
class Situation:
    """What the user knows: the accuracy budget and the data and time they have."""

    max_drop: float  # accepted drop of the workload's metric, in points
    training_data: bool = True  # labelled training data is available
    priority: Priority = "accuracy"  # "speed": a result soon matters more than the last tenth of a point
    model_kind: ModelKind = "cnn"
    calibration_data: bool = True  # a few hundred unlabeled representative inputs are available
    weight_bits: int = 8

    def __post_init__(self) -> None:
        if not self.max_drop >= 0:
            raise ConfigError(f"--max-drop {self.max_drop} must be a non-negative number of points, e.g. 1")
        if self.priority not in PRIORITIES:
            raise ConfigError(f"priority {self.priority!r} is not one of {', '.join(PRIORITIES)}")
        if self.model_kind not in MODEL_KINDS:
            raise ConfigError(f"model kind {self.model_kind!r} is not one of {', '.join(MODEL_KINDS)}")
        if self.weight_bits not in (4, 8):
            raise ConfigError(f"weight_bits={self.weight_bits} is not supported; use 4 or 8")

    @property
    def has_inputs(self) -> bool:
        """Some representative inputs exist (training inputs double as calibration inputs)."""
        return self.calibration_data or self.training_data

    @property
    def linear_heavy(self) -> bool:
        return self.model_kind in ("transformer", "linear-heavy")


# What each choice costs is declared by the method itself (``Method.cost``); "mixed" is not a method but
# tune's per-layer fallback, so its cost is declared here. The ladder of `quantplug tune` uses the same
# ranks: a stage beyond the advised one is "further".
MIXED_COST = MethodCost(2, "PTQ plus a per-layer sensitivity pass (one calibration per layer), then the most "
                           "sensitive layers kept at higher precision: a larger model",
                        "unlabeled inputs and a validation split")


@functools.lru_cache(maxsize=1)
def _default_costs() -> dict[str, MethodCost]:
    from ..registry import build_registry

    return method_costs(build_registry())


def method_costs(registry: Any = None) -> dict[str, MethodCost]:
    """Every registered method's declared :class:`MethodCost` by name, plus ``"mixed"``."""
    if registry is None:
        return _default_costs()
    costs = {m.name: m.cost for m in registry.methods() if m.cost is not None}
    return {**costs, "mixed": MIXED_COST}


def __getattr__(name: str) -> Any:  # METHOD_COSTS / STAGE_RANK: computed from the registered methods
    if name == "METHOD_COSTS":
        return method_costs()
    if name == "STAGE_RANK":
        return {n: c.rank for n, c in method_costs().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Rule:
    """One branch of the flowchart: when it applies, what it picks, and why."""

    name: str
    when: str  # the condition in words (printed by `advise --json` and in tune's explanation)
    test: Callable[[Situation], bool] = field(repr=False, compare=False)
    choice: str  # a method name (or "mixed" for PTQ with per-layer fallback)
    reason: str


RULES: tuple[Rule, ...] = (
    Rule("linear-without-calibration", "linear-heavy model (or transformer) and no calibration data",
         lambda s: s.linear_heavy and not s.calibration_data, "dynamic",
         "dynamic quantization needs no calibration inputs: activation ranges are measured per batch at run "
         "time, and the matrix products that dominate a linear-heavy model still run in INT8"),
    Rule("no-inputs", "no calibration data and no training data",
         lambda s: not s.has_inputs, "dynamic",
         "static INT8 needs representative inputs to calibrate and none are available; dynamic quantization "
         "is the only data-free option (convolutions stay FP32; collect ~128 unlabeled batches to use PTQ)"),
    Rule("speed-first", "priority is speed",
         lambda s: s.priority == "speed", "ptq",
         "PTQ is the quickest route (calibration only, no training); if the result misses the budget, "
         "`tune` goes further automatically"),
    Rule("tight-with-labels", f"max drop under {TIGHT_TOLERANCE:g} point and labelled training data",
         lambda s: s.max_drop < TIGHT_TOLERANCE and s.training_data, "qat",
         f"a budget under {TIGHT_TOLERANCE:g} point is within PTQ's typical error; quantization-aware training "
         "lets the weights adapt to the rounding, and labelled data is available"),
    Rule("tight-without-labels", f"max drop under {TIGHT_TOLERANCE:g} point and no labelled training data",
         lambda s: s.max_drop < TIGHT_TOLERANCE and not s.training_data, "qad",
         f"a budget under {TIGHT_TOLERANCE:g} point needs training with the quantizers, and without labels "
         "distillation from the FP32 model provides the targets from unlabeled inputs alone"),
    Rule("loose-tolerance", f"max drop of {TIGHT_TOLERANCE:g} point or more",
         lambda s: True, "ptq",
         "INT8 post-training quantization with a good calibrator usually stays within a point; it costs only "
         "calibration"),
)


@dataclass(frozen=True)
class Advice:
    """The outcome of :func:`advise`: the choice, why, what it costs and the command to run."""

    choice: str
    rule: str
    when: str
    reason: str
    cost: str
    needs: str
    epochs: int | None
    notes: tuple[str, ...]
    command: tuple[str, ...]  # argv after `quantplug`
    situation: Situation

    @property
    def command_line(self) -> str:
        return "quantplug " + shlex.join(self.command)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["command"] = list(self.command)
        d["command_line"] = self.command_line
        d["notes"] = list(self.notes)
        return d


def _epochs(s: Situation) -> int:
    return 5 if s.weight_bits == 4 else 3


def _notes(s: Situation, choice: str) -> tuple[str, ...]:
    notes = []
    if s.weight_bits == 4 and choice in ("ptq", "mixed"):
        notes.append("INT4 weights: PTQ alone often loses several points; `tune` keeps the most sensitive "
                     "layers (usually first, last and depthwise) at INT8 until the budget is met")
    if not s.calibration_data and s.training_data and choice not in ("dynamic",):
        notes.append("no separate calibration data: the training inputs are used for calibration")
    if s.model_kind == "transformer" and choice != "dynamic":
        notes.append("transformers: only the matrix products gain from INT8 (softmax, layer norm and GELU stay "
                     "FP32); dynamic quantization is a strong alternative when fidelity matters")
    if s.model_kind == "transformer" and choice in ("qat", "qad"):
        notes.append("pretrained transformers: fine-tune at their own fine-tuning rate (--lr-scale 1) in batches "
                     "of 32; on minilm a tenth of it left QAD short of 0.995 cosine (docs/results/minilm-methods.md)")
    return tuple(notes)


def _command(s: Situation, choice: str, model_args: tuple[str, ...], output: str, epochs: int) -> tuple[str, ...]:
    bits = ("--weight-bits", str(s.weight_bits)) if s.weight_bits != 8 else ()
    if choice in ("ptq", "mixed"):
        # tune starts with PTQ over every calibrator and goes further only when the budget is missed.
        return ("tune", *model_args, "--max-drop", f"{s.max_drop:g}", *bits, "--output", output)
    train: tuple[str, ...] = ()
    if choice in ("qat", "qad"):
        train = ("--epochs", str(epochs))
        if s.model_kind == "transformer":  # pretrained: the fine-tuning rate is already small (see _notes)
            train += ("--lr-scale", "1", "--train-batch-size", "32")
    return ("quantize", *model_args, "--method", choice, *bits, *train, "--output", output)


def advise(
    situation: Situation,
    *,
    model_args: tuple[str, ...] = ("--workload", "mnist-cnn"),
    output: str = "quantized",
) -> Advice:
    """Apply :data:`RULES` (first match wins) and return the explained choice and the command to run.

    ``model_args`` is how the command names the model (``--workload W`` or ``--model SPEC --data SPEC``).
    """
    for rule in RULES:
        if rule.test(situation):
            break
    else:  # pragma: no cover - the last rule always matches
        raise AssertionError("no rule matched")
    epochs = _epochs(situation)
    cost = method_costs()[rule.choice]
    return Advice(
        choice=rule.choice,
        rule=rule.name,
        when=rule.when,
        reason=rule.reason,
        cost=cost.cost.format(epochs=epochs),
        needs=cost.needs,
        epochs=epochs if rule.choice in ("qat", "qad") else None,
        notes=_notes(situation, rule.choice),
        command=_command(situation, rule.choice, model_args, output, epochs),
        situation=situation,
    )


def infer_model_kind(model: Any) -> ModelKind:
    """``"transformer"`` when the model has attention, ``"linear-heavy"`` when most weights are in Linear
    layers, else ``"cnn"`` (used by `tune` to ask the same question `advise` answers)."""
    from torch import nn

    linear = conv = 0
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower():
            return "transformer"
        if isinstance(module, nn.Linear):
            linear += module.weight.numel()
        elif isinstance(module, nn.modules.conv._ConvNd):
            conv += module.weight.numel()
    return "linear-heavy" if linear > conv else "cnn"
