"""Tiny real models and a tiny workload for the Triton tests: a CNN trained on sklearn's 8x8 digits,
exported to ONNX (dynamic batch) and quantized to QDQ INT8 (U8S8) by quantplug's own engine (PTQ)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DigitsWorkload:
    """The Workload contract (docs/internals.md) reduced to what serving needs: held-out set and score."""

    name = "test-digits"
    description = "sklearn 8x8 digits, held-out 30%"
    metric = "accuracy"
    input_names = ("image",)
    output_names = ("logits",)
    has_labels = True

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
        y = digits.target.astype(np.int64)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(y))
        cut = int(0.7 * len(y))
        self.train = (x[order[:cut]], y[order[:cut]])
        self.test = (x[order[cut:]], y[order[cut:]])

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {"image": self.test[0]}, self.test[1]

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"accuracy": float(100.0 * np.mean(outputs.argmax(axis=1) == targets))}


def build_models(workdir: Path, workload: DigitsWorkload) -> tuple[Path, Path]:
    """Train the CNN (seconds), write ``model_fp32.onnx`` and the QDQ ``model.onnx`` into ``workdir``."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10),
    )
    x, y = (torch.from_numpy(a) for a in workload.train)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _epoch in range(8):
        for i in range(0, len(y), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    net.eval()
    workdir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = workdir / "model_fp32.onnx", workdir / "model.onnx"
    torch.onnx.export(net, (x[:1],), str(fp32), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                      dynamo=False)

    from quantplug import QuantRecipe, quantize
    from quantplug.export import export_qdq

    recipe = QuantRecipe(method="ptq", calibrator="max", target="onnxruntime", calib_batches=100)
    calib = [x[i:i + 10] for i in range(0, 1000, 10)]
    qmodel = quantize(net, recipe, calib, progress=False)
    export_qdq(qmodel, (x[:1],), int8, target="onnxruntime", input_names=["image"], output_names=["logits"])
    return fp32, int8


def ort_run(onnx_path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, inputs)[0])
