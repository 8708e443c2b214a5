"""``quantplug bench --zoo``: models written by others, quantized as a new user would.

Hugging Face architectures built offline from small configs (random weights: no download), and a small
hand-written segmenter (SiLU, grouped conv, ``nn.MultiheadAttention``, concat, interpolate). Each one
is wrapped as ``quantplug.hf`` wraps a model (keyword inputs, one output tensor), PTQ-quantized for
ONNX Runtime through ``quantplug.quantize`` (the captured graph), exported, and measured in ONNX Runtime
at ``batch``: the share of conv/matmul multiply-adds that run in integer
(:mod:`quantplug.export.coverage`), top-1 agreement with the FP32 model on held-out random inputs, and
INT8/FP32 latency (alternated rounds), next to ONNX Runtime's own ``quantize_static`` on the same FP32
ONNX (the peer). Needs ``transformers`` (the ``dev``/``hf`` extra).
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZOO", "Segmenter", "run_zoo", "zoo_model"]

ZOO = ("resnet", "mobilenetv2", "convnext", "vit", "distilbert", "segmenter")


class _Wrapped(nn.Module):
    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor, *mask: torch.Tensor) -> torch.Tensor:
        kwargs = {self.key: x, **({"attention_mask": mask[0]} if mask else {})}
        return self.model(**kwargs).logits


class Segmenter(nn.Module):
    """A small segmenter: SiLU convs, a grouped conv, self-attention over the coarse grid, a skip concat
    and bilinear upsampling to per-pixel class logits."""

    def __init__(self, classes: int = 5, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.SiLU())
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1, groups=2), nn.BatchNorm2d(2 * width),
                                  nn.SiLU(), nn.Conv2d(2 * width, 2 * width, 1), nn.SiLU())
        self.attn = nn.MultiheadAttention(2 * width, 4, batch_first=True)
        self.fuse = nn.Sequential(nn.Conv2d(3 * width, width, 3, 1, 1), nn.SiLU())
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        d = self.down(s)
        n, c, h, w = d.shape
        seq = d.flatten(2).transpose(1, 2)
        a, _ = self.attn(seq, seq, seq, need_weights=False)
        d = d + a.transpose(1, 2).reshape(n, c, h, w)
        up = F.interpolate(d, size=s.shape[-2:], mode="bilinear", align_corners=False)
        y = self.head(self.fuse(torch.cat([s, up], dim=1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _eager(model: nn.Module) -> nn.Module:
    config: Any = model.config
    config._attn_implementation = "eager"  # explicit matmuls, as quantplug.hf loads models
    return model


def zoo_model(name: str, batch: int = 8, seed: int = 0) -> tuple[nn.Module, Callable[[int], tuple[torch.Tensor, ...]],
                                                                   list[str]]:
    """``(model, make_inputs(seed), input_names)`` for one zoo entry."""
    torch.manual_seed(seed)
    if name == "segmenter":
        model: nn.Module = Segmenter()
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import importlib

        t: Any = importlib.import_module("transformers")  # typed loosely: configs take **kwargs

        if name == "resnet":
            model = _Wrapped(t.ResNetForImageClassification(t.ResNetConfig(
                embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic",
                num_labels=10)), "pixel_values")
        elif name == "mobilenetv2":
            model = _Wrapped(t.MobileNetV2ForImageClassification(t.MobileNetV2Config(
                image_size=64, depth_multiplier=0.5, num_labels=10)), "pixel_values")
        elif name == "convnext":
            model = _Wrapped(t.ConvNextForImageClassification(t.ConvNextConfig(
                hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1], num_labels=10)), "pixel_values")
        elif name == "vit":
            model = _Wrapped(_eager(t.ViTForImageClassification(t.ViTConfig(
                image_size=64, patch_size=8, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                intermediate_size=768, num_labels=10))), "pixel_values")
        elif name == "distilbert":
            model = _Wrapped(_eager(t.DistilBertForSequenceClassification(t.DistilBertConfig(
                vocab_size=2000, dim=192, n_layers=4, n_heads=3, hidden_dim=768, max_position_embeddings=128,
                num_labels=4))), "input_ids")
        else:
            raise ValueError(f"unknown zoo model {name!r}; choose from {', '.join(ZOO)}")
    model.eval()
    if name == "distilbert":
        def text(s: int) -> tuple[torch.Tensor, ...]:
            g = torch.Generator().manual_seed(s)
            mask = torch.ones(batch, 64, dtype=torch.long)
            mask[:, 48:] = (torch.rand(batch, 16, generator=g) > 0.5).long()
            return torch.randint(0, 2000, (batch, 64), generator=g), mask

        return model, text, ["input_ids", "attention_mask"]

    def images(s: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(s)
        return (torch.randn(batch, 3, 64, 64, generator=g),)

    return model, images, ["input"]


def _legacy_prepare(model: nn.Module, recipe: Any, scheme: Any, example: Any = None) -> nn.Module:
    """The placement before capture existed (quantplug <= 2026-12-01 on untraceable models): module
    wrappers quantizing layer inputs only. For the zoo's before/after column."""
    import copy

    from ..quant.fold import fold_bn_by_execution, fold_bn_sequential
    from ..quant.prepare import PrepareReport, _swap, _wrap_modules, act_quantizers

    model = copy.deepcopy(model).eval()
    report = PrepareReport(traced=False, capture="modules")
    report.folded_bn = fold_bn_sequential(model)
    if example is not None:
        model, more = fold_bn_by_execution(model, example)
        report.folded_bn += more
    _swap(model, recipe, scheme, report, with_input_quant=True)
    _wrap_modules(model, recipe, scheme, report)
    report.activations = [q.qname for q in act_quantizers(model)]
    model.quantplug_report = report  # type: ignore[assignment]
    model.quantplug_scheme = scheme  # type: ignore[assignment]
    return model


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean() * 100)  # axis 1: classes (and per pixel for segmenter)


def _feeds(names: list[str], inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {n: t.numpy() for n, t in zip(names, inputs, strict=True)}


def run_zoo(names: tuple[str, ...] = ZOO, *, batch: int = 8, threads: int = 2, rounds: int = 5, reps: int = 5,
            calib_batches: int = 16, legacy: bool = False, peer: bool = True, progress: bool = True,
            out_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per model (see the module docstring); ``legacy`` uses the pre-capture placement."""
    import quantplug
    from quantplug import QuantRecipe
    from quantplug.export import export_fp32, export_quantized
    from quantplug.export.bench import bench_onnx, ort_quantize_static, session
    from quantplug.export.coverage import integer_share

    rows = []
    for name in names:
        model, make, input_names = zoo_model(name, batch)
        calib = [make(100 + i) for i in range(calib_batches)]
        held_out = make(7)
        recipe = QuantRecipe(method="ptq", calib_batches=calib_batches, calib_batch_size=batch)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if legacy:
                from ..quant import api

                real = api.prepare
                api.prepare = _legacy_prepare  # type: ignore[assignment]
                try:
                    q = quantplug.quantize(model, recipe, calib, progress=False)
                finally:
                    api.prepare = real  # type: ignore[assignment]
            else:
                q = quantplug.quantize(model, recipe, calib, progress=False)
        quantize_s = time.perf_counter() - t0
        report = q.quantplug_report
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(out_dir or tmp_dir) / name
            tmp.mkdir(parents=True, exist_ok=True)
            one = tuple(t[:1] for t in held_out)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fp32 = export_fp32(model, one, tmp / "model_fp32.onnx", input_names, ["logits"])
                int8 = export_quantized(q, one, tmp / "model.onnx", "onnxruntime", input_names, ["logits"])
            models = {"fp32": fp32, "int8": int8}
            if peer:
                models["peer"] = ort_quantize_static(fp32, tmp / "peer.onnx", [_feeds(input_names, c) for c in calib])
            feeds = _feeds(input_names, held_out)
            outs = {k: session(p, threads).run(None, feeds)[0] for k, p in models.items()}
            coverage = {k: integer_share(p, feeds).share for k, p in models.items() if k != "fp32"}
            bench = bench_onnx(models, feeds, threads=threads, rounds=rounds, reps=reps, warmup=2)
        row: dict[str, Any] = {
            "model": name, "capture": getattr(report, "capture", None), "placement": "legacy" if legacy else "current",
            "integer_share": round(coverage["int8"], 4),
            "top1_agreement": _top1(outs["int8"], outs["fp32"]),
            "int8_over_fp32": round(bench.ratio("int8", "fp32"), 3),
            "fp32_ms": round(bench.medians_ms["fp32"], 2), "int8_ms": round(bench.medians_ms["int8"], 2),
            "quantize_seconds": round(quantize_s, 1),
            "warnings": sorted({str(w.message).split(";")[0] for w in seen if "capture" in str(w.message)}),
        }
        if peer:
            row.update({"peer_integer_share": round(coverage["peer"], 4),
                        "peer_top1_agreement": _top1(outs["peer"], outs["fp32"]),
                        "peer_over_fp32": round(bench.ratio("peer", "fp32"), 3),
                        "peer_ms": round(bench.medians_ms["peer"], 2)})
        rows.append(row)
        if progress:
            print({k: v for k, v in row.items() if k != "warnings"}, flush=True)
    return rows


def format_zoo(rows: list[dict[str, Any]]) -> str:
    """The zoo as a Markdown table."""
    head = ("| model | capture | integer share | top-1 vs FP32 | INT8/FP32 time | peer integer share | "
            "peer top-1 | peer/FP32 time |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        peer = (f"{r['peer_integer_share']:.0%} | {r['peer_top1_agreement']:.1f}% | {r['peer_over_fp32']:.2f}"
                if "peer_over_fp32" in r else "- | - | -")
        lines.append(f"| {r['model']} | {r['capture']} | {r['integer_share']:.0%} | {r['top1_agreement']:.1f}% | "
                     f"{r['int8_over_fp32']:.2f} | {peer} |")
    return head + "\n".join(lines) + "\n"


def write_zoo(rows: list[dict[str, Any]], output: Path, settings: dict[str, Any]) -> Path:
    """``output/zoo.json`` (rows and settings) and ``output/zoo.md``, each via a temporary file."""
    import json

    output.mkdir(parents=True, exist_ok=True)
    path = output / "zoo.json"
    for target, text in ((path, json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n"),
                         (output / "zoo.md", format_zoo(rows))):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path
