"""A measured comparison of methods over seeds: FP32 vs ptq/qat/qad (or any registered methods).

    PYTHONPATH=. python3 scripts/compare_methods.py --workload digits-mobilenet --weight-bits 4 \
        --seeds 5 --methods ptq,qat,qad [--device cuda] [--out DIR]
    PYTHONPATH=. python3 scripts/compare_methods.py --workload minilm --seeds 1 \
        --methods ptq,qad --calibrator mse --lr-scale 1.0 --train-batch-size 32

Scores are ONNX Runtime's on the exported model, on the workload's held-out split (never used for
calibration or training). Prints a table of mean, std and worst drop of the workload's metric per method
(plus every other score the workload reports, e.g. minilm's worst-sentence cosine and top-10 neighbour
agreement) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", default="digits-mobilenet")
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--methods", default="ptq,qat,qad")
    p.add_argument("--calibrator", default="percentile")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr-scale", type=float, default=0.1, help="QAT/QAD learning rate, times the workload's")
    p.add_argument("--train-batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("compare-methods"))
    args = p.parse_args()
    warnings.simplefilter("ignore")

    import quantplug
    from quantplug import QuantRecipe
    from quantplug.export import export_quantized
    from quantplug.pipeline import predict_onnx, predict_torch

    registry = quantplug.build_registry(quantplug.get_plugin_manager(load_entrypoints=False))
    wl = registry.workload(args.workload)
    inputs, targets = wl.test_set()
    args.out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    fp32: list[float] = []
    for seed in range(args.seeds):
        model = wl.build_model(seed=seed, progress=False).eval()
        fp = wl.score(predict_torch(model, inputs, wl.input_names), targets)[wl.metric]
        fp32.append(fp)
        for method in methods:
            recipe = QuantRecipe(method=method, calibrator=args.calibrator, weight_bits=args.weight_bits,
                                 qat_epochs=args.epochs, lr_scale=args.lr_scale,
                                 train_batch_size=args.train_batch_size, seed=seed)
            t = time.perf_counter()
            q = quantplug.quantize(model.to(args.device), recipe, None, workload=wl, registry=registry,
                                   progress=False)
            seconds = time.perf_counter() - t
            q = q.cpu().eval()
            model.cpu()
            path = export_quantized(q, wl.example_inputs(1), args.out / f"{method}-seed{seed}.onnx", "onnxruntime",
                                    wl.input_names, wl.output_names, registry=registry)
            scores = wl.score(predict_onnx(path, inputs), targets)
            acc = scores[wl.metric]
            rows[method].append({"seed": seed, "fp32": fp, "accuracy": acc, "drop": fp - acc, "scores": scores,
                                 "seconds": round(seconds, 2), "size_bytes": path.stat().st_size})
            print(json.dumps({"method": method, **rows[method][-1]}), flush=True)
    summary = {"workload": args.workload, "weight_bits": args.weight_bits, "activation_bits": 8,
               "device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
               "torch": torch.__version__, "seeds": args.seeds, "epochs": args.epochs, "lr_scale": args.lr_scale,
               "train_batch_size": args.train_batch_size,
               "calibrator": args.calibrator, "fp32": fp32, "methods": {}}
    extra = [k for k in rows[methods[0]][0]["scores"] if k != wl.metric] if rows[methods[0]] else []
    print(f"\n{args.workload} W{args.weight_bits}A8, {args.seeds} seeds, FP32 mean {statistics.fmean(fp32):.4f}")
    print("| method | " + " | ".join([f"{wl.metric} mean", "std", "drop mean", "worst drop",
                                        *[f"{k} mean" for k in extra]]) + " |")
    print("|---" * (5 + len(extra)) + "|")
    for method, rs in rows.items():
        accs, drops = [r["accuracy"] for r in rs], [r["drop"] for r in rs]
        s = {"accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
             "drop_mean": statistics.fmean(drops), "drop_worst": max(drops),
             **{f"{k}_mean": statistics.fmean(r["scores"][k] for r in rs) for k in extra}, "runs": rs}
        summary["methods"][method] = s
        print(f"| {method} | {s['accuracy_mean']:.4f} | {s['accuracy_std']:.4f} | {s['drop_mean']:+.4f} | "
              f"{s['drop_worst']:+.4f} | " + " | ".join(f"{s[f'{k}_mean']:.4f}" for k in extra) + " |")
    (args.out / "compare_methods.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
