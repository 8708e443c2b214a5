"""What ``tune`` takes and gives: its options, its result, the output folder, and the explanations.

Kept apart from the search itself (:mod:`quantplug.decide.tune`) so that the CLI and reports read
results without the search machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .advise import Advice, method_costs
from .sensitivity import LayerSensitivity
from .trials import Trial, format_trials

__all__ = ["OUTPUT_FILES", "StopSearch", "TuneOptions", "TuneResult", "claim_output", "explain", "summary"]

MIN_CALIB_SAMPLES = 512  # fewer calibration inputs than this give noisy ranges: warn and take more
LR_RETRIES = (1.0, 0.1, 0.01)  # QAT/QAD learning-rate factors tried when training diverges
COLLAPSE_POINTS = 5.0  # a training trial this far below its PTQ starting point diverged, even without NaN
STAGE_OF = {"ptq": "ptq", "fallback": "mixed"}  # trial stage -> METHOD_COSTS key (training stages: the method)


@dataclass
class TuneOptions:
    max_drop: float
    weight_bits: int = 8
    target: str = "onnxruntime"
    time_budget_min: float | None = None
    seed: int = 0
    calib_batches: int = 32
    calib_batch_size: int = 32
    val_size: int = 500
    qat_epochs: int = 3
    sensitivity_calib_batches: int = 8
    min_calib_samples: int = MIN_CALIB_SAMPLES
    max_train_batches: int | None = None  # cap QAT/QAD batches per epoch (None: the whole training split)
    measure_speed: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.max_drop >= 0:
            raise ConfigError(f"--max-drop {self.max_drop} must be a non-negative number of points")
        if self.weight_bits not in (4, 8):
            raise ConfigError(f"--weight-bits {self.weight_bits} is not supported; use 8 or 4")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ConfigError(f"--time-budget {self.time_budget_min} must be a positive number of minutes")


@dataclass
class TuneResult:
    trials: list[Trial]
    winner: Trial | None
    fp_score: float
    metric: str
    advice: Advice
    explanation: str
    stopped: str  # "within budget", "time budget", "interrupted", "searched everything"
    output: Path
    test: dict[str, Any] = field(default_factory=dict)
    sensitivity: dict[str, list[LayerSensitivity]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fp32_size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_drop": self.advice.situation.max_drop,
            "metric": self.metric,
            "fp32_validation": self.fp_score,
            "fp32_size_bytes": self.fp32_size_bytes,
            "stopped": self.stopped,
            "winner": self.winner.index if self.winner else None,
            "winning_recipe": self.winner.recipe if self.winner else None,
            "explanation": self.explanation,
            "advice": self.advice.to_dict(),
            "test": self.test,
            "warnings": self.warnings,
            "sensitivity": {k: [r.to_dict() for r in v] for k, v in self.sensitivity.items()},
            "trials": [t.to_dict() for t in self.trials],
        }


class StopSearch(Exception):  # noqa: N818 - control flow: a configuration met the budget
    pass



OUTPUT_FILES = ("model.onnx", "model_fp32.onnx", "recipe.json", "metrics.json", "trials.json")


def claim_output(output: Path) -> None:
    """Create ``output``, refusing a folder that holds something else; a previous run's files are removed
    so that the folder never mixes two runs."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a directory; choose another --output")
    if output.is_dir():
        contents = {p.name for p in output.iterdir()}
        if contents and not contents & {"recipe.json", "metrics.json", "trials.json"}:
            raise ConfigError(f"output directory {output} is not empty and is not a quantplug output; choose a new "
                              "--output directory")
        for name in OUTPUT_FILES:
            (output / name).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)


def explain(advice: Advice, trials: list[Trial], winner: Trial | None, max_drop: float) -> str:
    """Why tune stopped where it did, compared with what ``advise`` recommends for the same inputs."""
    a = advice
    head = f"advise recommends {a.choice.upper()} for these inputs (rule {a.rule}: {a.when})"
    if winner is None:
        return f"{head}; no trial finished, so there is nothing to compare."
    stage = STAGE_OF.get(winner.stage, winner.stage)
    costs = method_costs()
    rank = costs.get(stage, costs["qat"]).rank
    advised = costs[a.choice].rank
    ptq = [t for t in trials if t.stage == "ptq" and t.drop is not None]
    ptq_best = min(ptq, key=lambda t: t.drop or 0.0) if ptq else None
    if not winner.within_budget:
        return (f"{head}; no configuration met the {max_drop:g}-point budget before the search ended; "
                f"the best so far is trial {winner.index} ({winner.config}, drop {winner.drop:+.2f}).")
    if rank == advised:
        return f"{head}; tune's choice matches: {winner.config} dropped {winner.drop:+.2f} points."
    if rank < advised:
        return (f"{head}; tune stopped earlier because the cheaper {winner.config} already met the budget "
                f"(drop {winner.drop:+.2f} <= {max_drop:g}).")
    why = (f"the best PTQ configuration ({ptq_best.config}) dropped {ptq_best.drop:+.2f} > "
           f"{max_drop:g} points" if ptq_best is not None else "PTQ did not finish")
    return f"{head}; tune went further because {why}: {winner.config} met the budget (drop {winner.drop:+.2f})."



def summary(result: TuneResult) -> str:
    """The final table of every trial, the winning recipe and the explanation, as text."""
    lines = [format_trials(result.trials, result.metric, result.winner.index if result.winner else None), ""]
    lines.append(f"FP32: validation {result.metric} {result.fp_score:.2f}, {result.fp32_size_bytes / 1024:.1f} KiB")
    lines.append(f"stopped: {result.stopped}")
    if result.winner is not None:
        w = result.winner
        lines.append(f"winner: trial {w.index} ({w.config}), validation drop {w.drop:+.2f}, "
                     f"{(w.size_bytes or 0) / 1024:.1f} KiB")
        if result.test:
            lines.append(f"held-out test {result.metric}: FP32 {result.test['fp32']:.2f}, quantized "
                         f"{result.test['quantized']:.2f} (drop {result.test['drop']:+.2f}, "
                         f"{result.test['rows']} rows)")
        lines.append(f"recipe: {result.output / 'recipe.json'}")
    lines.append(result.explanation)
    lines.extend(f"warning: {w}" for w in result.warnings)
    return "\n".join(lines)
