"""The demo: train on real MNIST, quantize with every method, serve on Triton, verify, load-test, report.

Every number in the report is measured in the run that writes it. Accuracy is measured on the held-out
test split (never used for calibration or training) on the model as served by Triton over gRPC.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..recipe import QuantRecipe
from ..report import format_table, mean_spread, write_json_atomic, write_text_atomic
from ..stages import stage

__all__ = ["DemoConfig", "run_demo"]

NO_INT4_KERNEL = "n/a: no INT4 kernel in ONNX Runtime CPU"


@dataclass
class DemoConfig:
    output: Path = Path("demo-output")
    repository: Path = Path("model_repository")
    workload: str = "mnist-resnet"
    int4_workload: str = "digits-mobilenet"
    model_prefix: str = "mnist_resnet"
    seeds: int = 3
    qat_epochs: int = 1  # mnist-resnet: one epoch keeps the demo within 15 minutes on 2 cores
    int4_qat_epochs: int = 3
    calib_batches: int = 128
    batch_size: int = 8  # request batch for the load tests
    users: int = 2
    pairs: int = 3
    duration_s: float = 10.0
    short_pairs: int = 1
    short_duration_s: float = 5.0
    progress: bool = True
    rows: list[dict[str, Any]] = field(default_factory=lambda: [
        {"label": "ptq", "method": "ptq", "calibrator": "percentile"},
        {"label": "qat", "method": "qat", "calibrator": "percentile"},
        {"label": "qad", "method": "qad", "calibrator": "percentile"},
        {"label": "dynamic", "method": "dynamic", "calibrator": "max"},
        {"label": "qat_w4a8", "method": "qat", "calibrator": "percentile", "weight_bits": 4},
    ])


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _recipe(cfg: DemoConfig, row: dict[str, Any], seed: int = 0, epochs: int | None = None) -> QuantRecipe:
    return QuantRecipe(method=row["method"], calibrator=row["calibrator"], target="onnxruntime",
                       weight_bits=row.get("weight_bits", 8), calib_batches=cfg.calib_batches,
                       qat_epochs=cfg.qat_epochs if epochs is None else epochs, seed=seed)


def _primary(metrics: dict[str, Any], key: str, where: str = "onnxruntime") -> float:
    return float(metrics[key][where][metrics["metric"]])


def _quantize_rows(cfg: DemoConfig, workload: Any, model: Any, registry: Any, pm: Any) -> list[dict[str, Any]]:
    from ..pipeline import predict_torch, quantize_to_dir

    rows = []
    for row in cfg.rows:
        _say(f"[demo] quantizing {cfg.workload} with {row['label']} ...")
        result = quantize_to_dir(workload, _recipe(cfg, row), cfg.output / "rows" / row["label"], registry=registry,
                                 pm=pm, progress=cfg.progress, model=model)
        m = result.metrics
        inputs, _ = workload.test_set()
        torch_out = predict_torch(result.qmodel, inputs, tuple(workload.input_names))
        rows.append({
            "_torch_outputs": torch_out,
            "parity_ok": bool(m.get("parity", {}).get("ok", True)),
            "onnxruntime_vs_torch": (m.get("parity", {}).get("torch_vs_runtime") or {}),
            "label": row["label"], "method": row["method"], "calibrator": row["calibrator"],
            "weight_bits": result.recipe.weight_bits, "activation_bits": result.recipe.activation_bits,
            "target": result.recipe.target, "output_dir": str(result.output_dir),
            "accuracy": _primary(m, "quantized"), "accuracy_torch": _primary(m, "quantized", "torch"),
            "fp32_accuracy_onnxruntime": _primary(m, "fp32"),
            "size_bytes": m["sizes"]["model.onnx"], "fp32_size_bytes": m["sizes"]["model_fp32.onnx"],
            "size_ratio": m["sizes"]["ratio"], "quantize_seconds": m["quantize_seconds"],
            "model": f"{cfg.model_prefix}_{row['label']}",
        })
    return rows


def _write_repository(cfg: DemoConfig, rows: list[dict[str, Any]], pm: Any) -> str:
    """Put the FP32 model and every quantized row into the repository; returns the FP32 model name."""
    from ..triton.repository import replace_model

    repo = cfg.repository
    repo.mkdir(parents=True, exist_ok=True)
    fp32_name = f"{cfg.model_prefix}_fp32"
    # The demo owns the model names it writes: replace them, leave anything else in the repository alone.
    first = Path(rows[0]["output_dir"])
    replace_model(repo, fp32_name, first / "model_fp32.onnx", files={"metrics.json": first / "metrics.json"}, pm=pm)
    for r in rows:
        src = Path(r["output_dir"])
        replace_model(repo, r["model"], src / "model.onnx",
                      files={"recipe.json": src / "recipe.json", "metrics.json": src / "metrics.json"}, pm=pm)
        shutil.copyfile(src / "recipe.json", repo / r["model"] / "recipe.json")
    return fp32_name


def _serve_verify_loadtest(cfg: DemoConfig, workload: Any, rows: list[dict[str, Any]], fp32_name: str,
                           pm: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..loadtest import run_ab
    from ..parity import compare
    from ..triton.client import evaluate_served
    from ..triton.server import TritonServer

    with stage(pm, "serve", repository=str(cfg.repository)):
        server = TritonServer(cfg.repository).start()
    try:
        _say(f"[demo] Triton serving {cfg.repository} on {server.grpc_url} (gRPC)")
        with stage(pm, "verify"):
            fp32_served = evaluate_served(server.grpc_url, fp32_name, workload, progress=cfg.progress)
            for r in rows:
                served = evaluate_served(server.grpc_url, r["model"], workload, progress=cfg.progress,
                                         keep_outputs=True)
                r["accuracy_served"] = float(served[workload.metric])
                # The model as served against the fake-quant model that was calibrated and trained.
                agreement = compare(r.pop("_torch_outputs"), served.pop("outputs"))
                r["served_vs_torch"] = agreement.to_dict()
        fp32 = {"model": fp32_name, "accuracy": float(fp32_served[workload.metric])}
        # Full A/B for the best static INT8 row; shorter runs for the others.
        static8 = [r for r in rows if r["method"] != "dynamic" and r["weight_bits"] == 8]
        best = max(static8 or rows, key=lambda r: (r["accuracy_served"], r["method"] == "ptq"))
        loadtests: dict[str, Any] = {}
        with stage(pm, "loadtest"):
            for r in [best, *[r for r in rows if r is not best]]:
                full = r is best
                _say(f"[demo] load test {fp32_name} vs {r['model']} "
                     f"({cfg.pairs if full else cfg.short_pairs} pair(s) x {cfg.duration_s if full else cfg.short_duration_s}s)")
                result = run_ab(server.grpc_url, fp32_name, r["model"], pairs=cfg.pairs if full else cfg.short_pairs,
                                users=cfg.users, duration_s=cfg.duration_s if full else cfg.short_duration_s,
                                batch_size=cfg.batch_size, warmup_s=1.0, progress=cfg.progress)
                loadtests[r["label"]] = result
                r["speedup"] = result["speedup_throughput"]
                r["speedup_p50"] = result["speedup_p50"]
                r["loadtest_failures"] = result["failures"]
                r["loadtest"] = "full" if full else "short"
        return fp32, {"best": best["label"], "runs": loadtests}
    finally:
        server.stop()


def _int4_table(cfg: DemoConfig, registry: Any, pm: Any) -> dict[str, Any]:
    from ..pipeline import quantize_to_dir

    workload = registry.workload(cfg.int4_workload)
    per_method: dict[str, list[dict[str, Any]]] = {m: [] for m in ("ptq", "qat", "qad")}
    fp32_acc: list[float] = []
    for seed in range(cfg.seeds):
        model = workload.build_model(seed=seed, progress=cfg.progress)
        for method in per_method:
            _say(f"[demo] {cfg.int4_workload} W4A8 {method}, seed {seed}")
            row = {"method": method, "calibrator": "percentile", "weight_bits": 4}
            res = quantize_to_dir(workload, _recipe(cfg, row, seed=seed, epochs=cfg.int4_qat_epochs),
                                  cfg.output / "int4" / f"{method}-seed{seed}", registry=registry, pm=pm,
                                  progress=cfg.progress, model=model)
            m = res.metrics
            if method == "ptq":
                fp32_acc.append(_primary(m, "fp32"))
            per_method[method].append({"seed": seed, "accuracy": _primary(m, "quantized"),
                                       "drop_pts": _primary(m, "fp32") - _primary(m, "quantized"),
                                       "size_ratio": m["sizes"]["ratio"],
                                       "quantize_seconds": m["quantize_seconds"]})
    rows = []
    for method, runs in per_method.items():
        acc = mean_spread([r["accuracy"] for r in runs])
        drop = mean_spread([r["drop_pts"] for r in runs])
        rows.append({"method": method, "weight_bits": 4, "activation_bits": 8, "accuracy_mean": acc["mean"],
                     "accuracy_std": acc["std"], "drop_pts_mean": drop["mean"], "drop_pts_std": drop["std"],
                     "drop_pts_max": drop["max"], "size_ratio": runs[0]["size_ratio"],
                     "quantize_seconds_mean": mean_spread([r["quantize_seconds"] for r in runs])["mean"],
                     "speedup": NO_INT4_KERNEL, "seeds": runs})
    return {"workload": cfg.int4_workload, "fp32_accuracy": mean_spread(fp32_acc), "rows": rows,
            "accuracy_where": "ONNX Runtime in-process on the held-out test split (597 images)"}


def _tables(report: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    main = format_table(report["rows"], [
        ("method", "label", None), ("calibrator", "calibrator", None),
        ("W/A bits", "bits", None),
        ("size (% of FP32)", "size_ratio", pct),
        ("accuracy served", "accuracy_served", lambda v: f"{v:.2f}"),
        ("drop (pts, served)", "accuracy_drop_pts", lambda v: f"{v:+.2f}"),
        ("speed-up (served)", "speedup", lambda v: f"{v:.2f}x"),
        ("served = fake-quant (top-1)", "served_top1", lambda v: f"{100 * v:.1f}%"),
        ("time to quantize", "quantize_seconds", lambda v: f"{v:.1f}s"),
    ])
    int4 = report["int4"]
    small = format_table(int4["rows"], [
        ("method", "method", None),
        ("accuracy (mean ± std)", "acc", None),
        ("drop pts (mean, worst)", "drop", None),
        ("size (% of FP32)", "size_ratio", pct),
        ("speed-up", "speedup", None),
    ])
    fp = report["fp32"]
    lt = report["loadtest"]["runs"][report["loadtest"]["best"]]
    return (
        f"## {report['workload']}: FP32 accuracy served {fp['accuracy']:.2f}% "
        f"({fp['size_bytes'] / 1e6:.2f} MB); held-out test set of {report['test_size']} images\n\n{main}\n\n"
        f"Speed-up: throughput of INT8 over FP32 served by the same Triton over gRPC, locust, request batch "
        f"{report['settings']['batch_size']}, {report['settings']['users']} users, median of per-pair ratios "
        f"(full A/B for {report['loadtest']['best']}: {lt['settings']['pairs']} pairs; p50 {lt['baseline']['p50_ms']:.1f} ms "
        f"FP32 vs {lt['candidate']['p50_ms']:.1f} ms INT8).\n\n"
        f"## {int4['workload']}, INT4 weights / INT8 activations, {report['settings']['seeds']} seeds "
        f"(FP32 {int4['fp32_accuracy']['mean']:.2f}% ± {int4['fp32_accuracy']['std']:.2f})\n\n{small}\n"
        f"\nMachine: {report['machine'].get('cpu_model', '?')}, {report['machine'].get('logical_cores', '?')} cores, "
        f"INT8 features: {', '.join(report['machine'].get('int8_flags') or []) or 'none'}; the models were made for "
        f"this CPU ({report['cpu']['scheme']}). 'served = fake-quant': top-1 agreement of "
        "the served model with the PyTorch fake-quant model on the held-out set. "
        "TensorRT on a GPU: not measured here (no TensorRT in this environment).\n"
    )


def run_demo(cfg: DemoConfig | None = None) -> dict[str, Any]:
    """Run the main job; returns the report (also written to ``cfg.output/report.json``)."""
    from ..cpu import describe_scheme_need, detect_cpu
    from ..loadtest.machine import machine_info
    from ..plugins import get_plugin_manager
    from ..registry import build_registry
    from .plot import plot_report

    cfg = cfg or DemoConfig()
    if cfg.seeds < 1 or cfg.pairs < 1:
        raise ConfigError("the demo needs at least 1 seed and 1 load-test pair")
    started = time.perf_counter()
    pm = get_plugin_manager()
    registry = build_registry(pm)
    workload = registry.workload(cfg.workload)

    _say(f"[demo] 1/8 training (or loading the cached) FP32 {cfg.workload} on real MNIST digits")
    model = workload.build_model(seed=0, progress=cfg.progress)
    _say("[demo] 2/8 quantizing with " + ", ".join(r["label"] for r in cfg.rows))
    rows = _quantize_rows(cfg, workload, model, registry, pm)
    _say(f"[demo] 3/8 writing the FP32 and quantized models into {cfg.repository}/")
    with stage(pm, "repository", repository=str(cfg.repository)):
        fp32_name = _write_repository(cfg, rows, pm)
    _say("[demo] 4-5/8 serving with the bundled Triton, measuring served accuracy and load-testing")
    fp32, loadtest = _serve_verify_loadtest(cfg, workload, rows, fp32_name, pm)
    fp32["size_bytes"] = rows[0]["fp32_size_bytes"]
    fp32["accuracy_onnxruntime"] = rows[0]["fp32_accuracy_onnxruntime"]
    for r in rows:
        r["accuracy_drop_pts"] = fp32["accuracy"] - r["accuracy_served"]
        r["bits"] = f"W{r['weight_bits']}A{r['activation_bits']}"
        if r["method"] == "dynamic":
            r["bits"] = f"W{r['weight_bits']}A8 (dynamic)"
        r["served_top1"] = r["served_vs_torch"]["top1"]
    _say(f"[demo] 7/8 INT4 weights on {cfg.int4_workload}: ptq vs qat vs qad over {cfg.seeds} seeds")
    int4 = _int4_table(cfg, registry, pm)
    for r in int4["rows"]:
        r["acc"] = f"{r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f}"
        r["drop"] = f"{r['drop_pts_mean']:+.2f}, {r['drop_pts_max']:+.2f}"

    inputs, targets = workload.test_set()
    report: dict[str, Any] = {
        "workload": cfg.workload, "test_size": int(len(targets)),
        "fp32": fp32, "rows": rows, "int4": int4, "loadtest": loadtest,
        "machine": machine_info(), "cpu": {"isa": detect_cpu().isa, "scheme": describe_scheme_need()},
        "settings": {k: v for k, v in asdict(cfg).items() if k != "rows"},
        "notes": {"speedup": "served throughput ratio INT8/FP32, same Triton server, locust over gRPC",
                  "accuracy_served": "held-out test split through Triton over gRPC",
                  "tensorrt": "not measured: TensorRT and a GPU are not available here"},
    }
    report["settings"]["output"] = str(cfg.output)
    report["settings"]["repository"] = str(cfg.repository)
    with stage(pm, "report", output=str(cfg.output)):
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        text = _tables(report)
        write_json_atomic(cfg.output / "report.json", report)
        write_text_atomic(cfg.output / "report.md", text)
        plot_report(report, cfg.output / "report.png")
    print(text)
    _say(f"[demo] 8/8 wrote {cfg.output}/report.json, report.md and report.png in {report['wall_seconds']:.0f}s; "
         f"serve the models again with: quantplug serve --repository {cfg.repository}")
    return report
