"""Per-layer sensitivity: how much the metric drops when one layer alone is quantized.

Each layer is quantized at the target precision while every other layer stays one step higher (INT4
weights: the others at INT8; INT8: the others in floating point), through ``QuantRecipe.layer_overrides``
and the public :func:`quantplug.quantize`. The drop is measured on the validation split carved from the
training data (:class:`quantplug.decide.data.DecisionData`), never on the held-out test set.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..recipe import LayerOverride, QuantRecipe
from .data import DecisionData

__all__ = [
    "LayerSensitivity",
    "analyse",
    "model_size_bytes",
    "plot_sensitivity",
    "quantized_layers",
    "sensitivity_table",
]


@dataclass
class LayerSensitivity:
    layer: str  # the module name, as used in QuantRecipe.layer_overrides
    kind: str  # module class, e.g. "Conv2d"
    params: int  # weight elements
    bits: int  # the precision tested for this layer
    score: float  # validation metric with only this layer at ``bits``
    drop: float  # FP32 validation metric minus ``score``, in points
    output_error: float  # relative MSE of the outputs to FP32's (ranks layers whose drops tie)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantized_layers(qmodel: Any) -> dict[str, Any]:
    """``{layer name: quantized module}`` for every layer with a weight quantizer in a quantized model."""
    out: dict[str, Any] = {}
    for name, module in qmodel.named_modules():
        wq = getattr(module, "weight_quant", None)
        if wq is not None and getattr(module, "weight", None) is not None:
            out[getattr(module, "qname", name) or name] = module
    return out


def model_size_bytes(qmodel: Any) -> int:
    """Deployed weight storage: quantized weights at their bit width (plus one FP32 scale per row),
    everything else (biases, norms, FP layers) at 4 bytes per element."""
    quantized = {id(m.weight): m for m in quantized_layers(qmodel).values()}
    total = 0
    seen: set[int] = set()
    for p in list(qmodel.parameters()) + [b for b in qmodel.buffers() if b.is_floating_point()]:
        if id(p) in seen:
            continue
        seen.add(id(p))
        module = quantized.get(id(p))
        wq = getattr(module, "weight_quant", None) if module is not None else None
        if wq is not None and getattr(wq, "enabled", True):
            bits = int(getattr(wq, "bits", 8))
            rows = int(wq.scale(p.detach()).numel()) if hasattr(wq, "scale") else p.shape[0]
            total += (p.numel() * bits + 7) // 8 + 4 * rows
        elif p.is_floating_point():
            total += 4 * p.numel()
    return total


def _fallback_bits(bits: int) -> LayerOverride:
    """The next precision up: INT4 weights -> INT8, INT8 -> floating point."""
    return LayerOverride(weight_bits=8) if bits == 4 else LayerOverride(fp=True)


def only_layer_recipe(base: QuantRecipe, layer: str, layers: list[str]) -> QuantRecipe:
    """``base`` with every layer but ``layer`` one precision step up."""
    overrides = {name: _fallback_bits(base.weight_bits) for name in layers if name != layer}
    return base.replace(layer_overrides={k: asdict(v) for k, v in overrides.items()})


Quantizer = Callable[[Any, QuantRecipe], Any]


def analyse(
    model: Any,
    base: QuantRecipe,
    data: DecisionData,
    quantize: Quantizer,
    *,
    fp_score: float | None = None,
    targets: Any = None,
    layers: list[str] | None = None,
    progress: bool = True,
) -> list[LayerSensitivity]:
    """Quantize one layer at a time (the others one step up) and measure each drop; most sensitive first.

    ``quantize(model, recipe)`` returns a quantized copy (e.g. a closure over :func:`quantplug.quantize`
    with the calibration data). ``layers`` defaults to every layer the engine quantizes under ``base``.
    """
    from tqdm.auto import tqdm

    from .data import predict

    targets = data.targets(model) if targets is None else targets
    fp_score = data.score(model, targets) if fp_score is None else fp_score
    reference = predict(model, data.val_inputs)
    if layers is None:
        layers = list(quantized_layers(quantize(copy.deepcopy(model), base)))
    if not layers:
        raise ConfigError("the model has no layer the engine quantizes (Conv/Linear/Embedding); nothing to analyse")
    out: list[LayerSensitivity] = []
    for layer in tqdm(layers, desc="sensitivity", disable=not progress, leave=False):
        started = time.perf_counter()
        qmodel = quantize(copy.deepcopy(model), only_layer_recipe(base, layer, layers))
        module = quantized_layers(qmodel).get(layer)
        score, err = data.evaluate(qmodel, targets, reference)
        weight = getattr(module, "weight", None)
        out.append(LayerSensitivity(
            layer=layer,
            kind=type(module).__name__.removeprefix("Quant") if module is not None else "?",
            params=int(weight.numel()) if weight is not None else 0,
            bits=base.weight_bits,
            score=score,
            drop=fp_score - score,
            output_error=err,
            seconds=time.perf_counter() - started,
        ))
    out.sort(key=lambda s: (s.drop, s.output_error), reverse=True)
    return out


def sensitivity_table(rows: list[LayerSensitivity], metric: str = "accuracy") -> str:
    from ..report.table import format_table

    return format_table(
        [r.to_dict() for r in rows],
        [("layer", "layer", None), ("kind", "kind", None), ("weights", "params", lambda v: f"{v:,}"),
         ("bits", "bits", str), (f"val {metric}", "score", lambda v: f"{v:.2f}"),
         ("drop (pts)", "drop", lambda v: f"{v:+.2f}"), ("output error", "output_error", lambda v: f"{v:.2e}")],
    )


def plot_sensitivity(rows: list[LayerSensitivity], path: str | Path, *, title: str = "",
                     budget: float | None = None) -> Path:
    """A horizontal bar chart of per-layer drop, most sensitive at the top; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    ordered = sorted(rows, key=lambda r: (r.drop, r.output_error))
    height = max(2.5, 0.32 * len(ordered) + 1.4)
    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(11, height), sharey=True,
                                     gridspec_kw={"width_ratios": [3, 2]})
    names = [r.layer for r in ordered]
    colors = ["#c0392b" if budget is not None and r.drop > budget else "#2e86c1" for r in ordered]
    ax.barh(names, [r.drop for r in ordered], color=colors)
    ax.axvline(0, color="black", linewidth=0.8)
    if budget is not None:
        ax.axvline(budget, color="#c0392b", linestyle="--", linewidth=1, label=f"budget {budget:g} pts")
        ax.legend(loc="lower right")
    bits = ordered[0].bits if ordered else 8
    ax.set_xlabel(f"metric drop (points), only this layer at {'INT4 weights' if bits == 4 else 'INT8'}")
    ax.set_title(title or "per-layer quantization sensitivity", loc="left")
    ax_err.barh(names, [max(r.output_error, 1e-12) for r in ordered], color="#7d3c98")
    ax_err.set_xscale("log")
    ax_err.set_xlabel("output error vs FP32 (relative MSE, log)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class SensitivityReport:
    workload: str
    metric: str
    weight_bits: int
    fp_score: float
    val_rows: int
    recipe: dict[str, Any]
    layers: list[LayerSensitivity]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [r.to_dict() for r in self.layers]
        return d


def run_sensitivity(model: Any, workload: Any, *, weight_bits: int = 8, target: str = "onnxruntime",
                    calibrator: str = "percentile", calib_batches: int = 16, calib_batch_size: int = 32,
                    val_size: int = 500, seed: int = 0, registry: Any = None,
                    progress: bool = True) -> SensitivityReport:
    """Carve a validation split from ``workload``'s training data and analyse every quantized layer."""
    from . import _engine

    registry = registry or _engine.default_registry()
    data = DecisionData.carve(workload, val_size, calib_batch_size, seed)
    base = QuantRecipe(method="ptq", calibrator=calibrator, target=target, weight_bits=weight_bits,
                       calib_batches=calib_batches, calib_batch_size=calib_batch_size, seed=seed)
    registry.calibrator(calibrator)  # unknown names fail before any work

    def quantize(m: Any, recipe: QuantRecipe) -> Any:
        calib = data.calibration(recipe.calib_batches, recipe.calib_batch_size)
        return _engine.quantize(m, recipe, calib, None, workload=workload, registry=registry, progress=False,
                                quiet_thin=True)

    targets = data.targets(model)
    fp_score = data.score(model, targets)
    rows = analyse(model, base, data, quantize, fp_score=fp_score, targets=targets, progress=progress)
    return SensitivityReport(getattr(workload, "name", "?"), getattr(workload, "metric", "accuracy"), weight_bits,
                             fp_score, data.val_rows, base.to_dict(), rows)
