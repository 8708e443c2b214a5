"""``quantplug verify``: does the exported (and the served) model compute what was calibrated?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _inputs(output_dir: Path, workload: str | None, data: str | None) -> dict[str, Any]:
    import numpy as np

    from ..errors import ConfigError

    if data:
        path = Path(data)
        if not path.is_file() or path.suffix != ".npz":
            raise ConfigError(f"--data {data}: pass an .npz file of named inputs (the model's input names)")
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    metrics_path = output_dir / "metrics.json"
    name = workload or (json.loads(metrics_path.read_text()).get("workload") if metrics_path.is_file() else None)
    if not name:
        raise ConfigError(f"{output_dir} names no workload; pass --workload NAME or --data inputs.npz")
    from ..registry import build_registry

    inputs, _ = build_registry().workload(name).test_set()
    return dict(inputs)


@click.command("verify")
@click.argument("output_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--workload", help="Workload whose held-out inputs to use (default: the one in metrics.json).")
@click.option("--data", help="An .npz of held-out inputs, keyed by input name (instead of a workload).")
@click.option("--url", help="Also compare the model served at this Triton gRPC address (e.g. 127.0.0.1:8001).")
@click.option("--model", "served_model", help="The served model name (with --url).")
@click.option("--samples", type=int, default=1000, show_default=True, help="Held-out samples to compare.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(output_dir: str, workload: str | None, data: str | None, url: str | None, served_model: str | None,
            samples: int, as_json: bool) -> None:
    """Compare, on held-out inputs, the QDQ graph's own arithmetic (what the fake-quant model computes),
    ONNX Runtime's integer kernels on this CPU and, with --url/--model, the model served over gRPC.

    OUTPUT_DIR is a `quantplug quantize` folder; the fake-quant PyTorch comparison made when it was
    written is shown from its metrics.json. Exits 2 with the first divergent layer named when any pair
    differs beyond the tolerance (quantplug.parity.TOLERANCE)."""
    from ..errors import ConfigError, ParityError
    from ..parity import check_parity, compare_served, run_onnx

    folder = Path(output_dir)
    model_path = folder / "model.onnx"
    if not model_path.is_file():
        raise ConfigError(f"{folder} has no model.onnx; pass the --output folder of `quantplug quantize`")
    if bool(url) != bool(served_model):
        raise ConfigError("--url and --model go together (the server's gRPC address and the model name)")
    inputs = {k: v[:samples] for k, v in _inputs(folder, workload, data).items()}
    fp32_path = folder / "model_fp32.onnx"
    fp32_out = run_onnx(fp32_path, inputs)[0] if fp32_path.is_file() else None
    report = check_parity(None, model_path, inputs, tuple(inputs), fp32_out=fp32_out)
    result: dict[str, Any] = {"runtime": report.to_dict()}
    metrics_path = folder / "metrics.json"
    recorded = json.loads(metrics_path.read_text()).get("parity") if metrics_path.is_file() else None
    result["recorded_at_quantize"] = recorded
    served = compare_served(url, served_model, model_path, inputs) if url and served_model else None
    if served is not None:
        result["served_vs_runtime"] = served.to_dict()
    ok = report.ok and (served is None or served.within_tolerance)
    result["ok"] = ok
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        def line(label: str, a: Any) -> None:
            top1 = f", top-1 agreement {a['top1']:.2%}" if a.get("top1") is not None else ""
            flag = "ok" if a["within_tolerance"] else "DIFFERS"
            click.echo(f"{label:<40} max abs {a['max_abs']:.4g}, mean abs {a['mean_abs']:.3g}{top1}, "
                       f"cosine {a['cosine_mean']:.5f}  {flag}")

        cpu = report.cpu
        click.echo(f"CPU {cpu['model']} ({cpu['isa']}); model made for {report.made_for.get('cpu') or '?'} "
                   f"(8-bit weights within +-{report.made_for.get('weight_qmax', '?')}); {len(inputs[next(iter(inputs))])} samples")
        if recorded and recorded.get("torch_vs_runtime"):
            line("fake-quant PyTorch vs ONNX Runtime (at quantize)", recorded["torch_vs_runtime"])
        line("QDQ reference vs ONNX Runtime (here)", report.reference_vs_runtime.to_dict())
        if served is not None:
            line(f"ONNX Runtime vs served {served_model}", served.to_dict())
    if not ok:
        if not report.ok:
            raise ParityError(report.message())
        raise ParityError(f"the served model {served_model!r} differs from model.onnx under ONNX Runtime "
                          f"(max abs {served.max_abs:.4g}); check that it was added from {folder}")  # type: ignore[union-attr]
