"""Check that calibration, QAT and QAD run on a CUDA GPU and give the same quality as on the CPU.

Run on a machine with a GPU and PyTorch (quantplug on PYTHONPATH is enough; no Triton needed):
    PYTHONPATH=. python3 scripts/gpu_check.py [--out DIR]
It trains (or loads) the digits-mobilenet FP32 model, quantizes it W4A8 with qat and qad on the GPU and
on the CPU with the same seed, exports the GPU-trained model to QDQ ONNX and checks ONNX Runtime's
accuracy on the held-out split against the PyTorch fake-quant accuracy. Writes a JSON summary.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")

    import quantplug
    from quantplug import QuantRecipe
    from quantplug.export import export_quantized
    from quantplug.pipeline import predict_onnx, predict_torch

    registry = quantplug.build_registry(quantplug.get_plugin_manager(load_entrypoints=False))
    wl = registry.workload("digits-mobilenet")
    model = wl.build_model(seed=0, progress=False).eval()
    inputs, targets = wl.test_set()
    summary: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "fp32_accuracy": wl.score(predict_torch(model, inputs, wl.input_names), targets)["accuracy"],
                     "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for method in ("qat", "qad"):
        recipe = QuantRecipe(method=method, calibrator="percentile", weight_bits=4, qat_epochs=args.epochs)
        for device in ("cuda", "cpu"):
            m = copy.deepcopy(model).to(device)
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            q = quantplug.quantize(m, recipe, None, workload=wl, registry=registry, progress=False)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t
            on_device = next(q.parameters()).device.type
            q = q.cpu().eval()
            acc_torch = wl.score(predict_torch(q, inputs, wl.input_names), targets)["accuracy"]
            row = {"method": method, "device": device, "trained_on": on_device, "seconds": round(seconds, 2),
                   "accuracy_torch": acc_torch}
            if device == "cuda":
                path = export_quantized(q, wl.example_inputs(1), args.out / f"{method}.onnx", "onnxruntime",
                                        wl.input_names, wl.output_names, registry=registry)
                row["accuracy_onnxruntime"] = wl.score(predict_onnx(path, inputs), targets)["accuracy"]
            summary["runs"].append(row)
            print(json.dumps(row), flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
