"""QuantRecipe: every choice that produced a quantized model, JSON round-trippable.

A recipe is written next to every artifact, so each number can be traced to its exact settings.
Validation happens on construction and raises :class:`quantplug.errors.ConfigError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["LayerOverride", "QuantRecipe", "RECIPE_VERSION"]

RECIPE_VERSION = 1
_GRANULARITIES = ("per-tensor", "per-channel", "per-group")


@dataclass
class LayerOverride:
    """Per-layer settings; ``fp=True`` keeps the layer in floating point (no quantizers at all)."""

    fp: bool = False
    weight_bits: int | None = None
    activation_bits: int | None = None

    def __post_init__(self) -> None:
        if self.weight_bits is not None and self.weight_bits not in (4, 8):
            raise ConfigError(f"layer override weight_bits={self.weight_bits} is not supported; use 4 or 8")
        if self.activation_bits is not None and self.activation_bits != 8:
            raise ConfigError(f"layer override activation_bits={self.activation_bits} is not supported; use 8")


@dataclass
class QuantRecipe:
    method: str = "ptq"
    calibrator: str = "max"
    target: str = "onnxruntime"
    weight_bits: int = 8
    activation_bits: int = 8
    granularity: str = "per-channel"  # weights; activations are always per-tensor
    group_size: int = 32  # for per-group INT4 weights
    layer_overrides: dict[str, LayerOverride] = field(default_factory=dict)
    calib_batches: int = 128
    calib_batch_size: int = 32
    percentile: float = 99.99
    histogram_bins: int = 2048
    qat_epochs: int = 3
    train_batch_size: int = 64  # QAT/QAD batch size
    lr_scale: float = 0.1
    train_dropout: bool = False  # QAT/QAD: keep dropout active while fine-tuning (off: see quant/train.py)
    distill_temperature: float = 4.0
    distill_alpha: float = 1.0  # weight of the distillation loss; 1 - alpha goes to the label loss
    seed: int = 0
    # The serving CPU's integer ISA (quantplug.cpu): "auto" is resolved to this machine's when quantizing,
    # so recipe.json records the CPU the model is exact on.
    cpu: str = "auto"
    version: int = RECIPE_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # third-party method/calibrator settings

    def __post_init__(self) -> None:
        self.layer_overrides = {
            k: v if isinstance(v, LayerOverride) else LayerOverride(**v) for k, v in self.layer_overrides.items()
        }
        if self.weight_bits not in (4, 8):
            raise ConfigError(f"weight_bits={self.weight_bits} is not supported; use --weight-bits 4 or 8")
        if self.activation_bits != 8:
            raise ConfigError(f"activation_bits={self.activation_bits} is not supported; activations are 8-bit")
        if self.granularity not in _GRANULARITIES:
            raise ConfigError(f"granularity {self.granularity!r} is not one of {', '.join(_GRANULARITIES)}")
        if self.granularity == "per-group" and self.weight_bits != 4:
            raise ConfigError("per-group granularity is for INT4 weights; use --weight-bits 4 or per-channel")
        if self.group_size < 1:
            raise ConfigError(f"group_size={self.group_size} must be at least 1")
        if self.calib_batches < 1:
            raise ConfigError(f"calib_batches={self.calib_batches} must be at least 1 (128 recommended)")
        if self.calib_batch_size < 1:
            raise ConfigError(f"calib_batch_size={self.calib_batch_size} must be at least 1")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile={self.percentile} must be in (50, 100], e.g. 99.99")
        if self.histogram_bins < 128:
            raise ConfigError(f"histogram_bins={self.histogram_bins} is too coarse; use at least 128 (2048 recommended)")
        if self.train_batch_size < 1:
            raise ConfigError(f"train_batch_size={self.train_batch_size} must be at least 1")
        if self.qat_epochs < 0:
            raise ConfigError(f"qat_epochs={self.qat_epochs} must not be negative")
        if not 0 < self.lr_scale <= 1:
            raise ConfigError(f"lr_scale={self.lr_scale} must be in (0, 1]; it is a fraction of the model's own training rate (default 0.1), set with --lr-scale")
        if self.distill_temperature <= 0:
            raise ConfigError(f"distill_temperature={self.distill_temperature} must be positive")
        if not 0 <= self.distill_alpha <= 1:
            raise ConfigError(f"distill_alpha={self.distill_alpha} must be in [0, 1]")
        from .cpu import CPU_CHOICES

        if self.cpu not in CPU_CHOICES and self.cpu != "generic":
            raise ConfigError(f"cpu={self.cpu!r} is not one of {', '.join(CPU_CHOICES)}; pass --cpu with the serving "
                              "CPU's integer instructions (`quantplug env` shows this machine's)")
        if self.version > RECIPE_VERSION:
            raise ConfigError(
                f"recipe version {self.version} is newer than this quantplug understands ({RECIPE_VERSION}); upgrade quantplug"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantRecipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"recipe has unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> QuantRecipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"recipe is not valid JSON ({e}); fix the file or write it with QuantRecipe.save") from e
        if not isinstance(data, dict):
            raise ConfigError("recipe JSON must be an object of field: value")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> QuantRecipe:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe file {p} does not exist; pass the recipe.json a quantize run wrote")
        return cls.from_json(p.read_text())

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file, then rename)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(p)

    def replace(self, **changes: Any) -> QuantRecipe:
        d = self.to_dict()
        d.update(changes)
        return QuantRecipe.from_dict(d)

    def bits_for(self, layer: str) -> tuple[int | None, int | None]:
        """(weight bits, activation bits) for a layer, None meaning floating point."""
        o = self.layer_overrides.get(layer)
        if o is None:
            return self.weight_bits, self.activation_bits
        if o.fp:
            return None, None
        return o.weight_bits or self.weight_bits, o.activation_bits or self.activation_bits
