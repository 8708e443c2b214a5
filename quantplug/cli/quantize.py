"""``quantplug quantize``: quantize a workload or your own model into a directory."""

from __future__ import annotations

import click

from ._data_options import DATA_HELP, data_file_options


@click.command("quantize")
@click.option("--workload", "workload_name", help="A registered workload (see `quantplug plugins`).")
@click.option("--model", "model_spec",
              help="Your model: hf:DIR (a Hugging Face model folder) or a factory package.module:build "
                   "(returns an nn.Module).")
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict for --model (torch.save).")
@click.option("--onnx", "onnx_file", type=click.Path(dir_okay=False),
              help="An ONNX file to quantize instead of --model (every method; --data as for --model).")
@click.option("--data", "data_spec", help=DATA_HELP)
@click.option("--hf-output", default="auto", show_default=True,
              help="The output a Hugging Face model is quantized and scored on: logits, last_hidden_state, "
                   "pooler_output, mean, mean-normalized, cls, or any output field (auto: logits of a task "
                   "head, else a sentence-transformers embedding, else last_hidden_state).")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), help="A recipe.json to start from.")
@click.option("--method", help="ptq, qat, qad, dynamic or a plugin's method.")
@click.option("--calibrator", help="max, percentile, entropy, mse or a plugin's calibrator.")
@click.option("--target", help="onnxruntime or tensorrt (the scheme the runtime executes).")
@click.option("--weight-bits", type=int, help="4 or 8.")
@click.option("--calib-batches", type=int, help="Calibration batches (default 128).")
@click.option("--calib-batch-size", type=int,
              help="Samples per calibration batch (default 32); under 500 samples in all warns.")
@click.option("--epochs", type=int, help="QAT/QAD epochs.")
@click.option("--lr-scale", type=float,
              help="QAT/QAD learning rate as a fraction of the model's training rate (default 0.1).")
@click.option("--train-batch-size", type=int, help="QAT/QAD batch size (default 64).")
@click.option("--seed", type=int, help="Seed for the model, data order and training.")
@click.option("--cpu", type=click.Choice(["auto", "avx2", "avx512", "vnni", "amx", "arm"]),
              help="The serving CPU's integer instructions (default auto: this machine). avx2/avx512 (no VNNI) "
                   "get 7-bit weights, exact there and everywhere; vnni/amx keep full 8-bit weights.")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--allow-divergence", is_flag=True,
              help="Write the output even when ONNX Runtime's outputs differ from the fake-quant model beyond "
                   "the parity tolerance (recorded in metrics.json 'parity').")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@data_file_options
def command(workload_name: str | None, model_spec: str | None, onnx_file: str | None,
            weights: str | None, data_spec: str | None,
            hf_output: str, recipe_file: str | None, method: str | None, calibrator: str | None,
            target: str | None, weight_bits: int | None, calib_batches: int | None, calib_batch_size: int | None,
            epochs: int | None, lr_scale: float | None, train_batch_size: int | None, seed: int | None,
            cpu: str | None, output: str, allow_divergence: bool, quiet: bool,
            **data_file: object) -> None:
    """Quantize a workload (--workload) or your model (--model/--weights/--data) into OUTPUT:
    model.onnx (QDQ or dynamic), model_fp32.onnx, recipe.json and metrics.json.

    Without labels in the data, the scores are fidelity to the FP32 model on the held-out part of the
    data (top-1 agreement and cosine)."""
    import json

    from ..errors import ConfigError
    from ..plugins import get_plugin_manager
    from ..recipe import QuantRecipe
    from ..registry import build_registry

    if sum(map(bool, (workload_name, model_spec, onnx_file))) != 1:
        raise ConfigError("give exactly one of --workload NAME, --onnx FILE or --model (hf:DIR or package.module:build)")
    recipe = QuantRecipe.load(recipe_file) if recipe_file else QuantRecipe()
    changes = {k: v for k, v in {"method": method, "calibrator": calibrator, "target": target,
                                 "weight_bits": weight_bits, "calib_batches": calib_batches,
                                 "calib_batch_size": calib_batch_size,
                                 "qat_epochs": epochs, "lr_scale": lr_scale, "train_batch_size": train_batch_size,
                                 "seed": seed, "cpu": cpu}.items() if v is not None}
    recipe = recipe.replace(**changes)
    pm = get_plugin_manager()
    registry = build_registry(pm)
    registry.method(recipe.method)
    registry.calibrator(recipe.calibrator)
    registry.backend(recipe.target)
    given = {k: v for k, v in data_file.items() if v is not None}
    if onnx_file:
        from typing import Any

        from ..onnx_in import OnnxWorkload
        from ._data_options import file_options

        if weights or hf_output != "auto":
            raise ConfigError("--weights and --hf-output go with --model; an ONNX file holds its own weights")
        source: Any = OnnxWorkload(onnx_file, data_spec, data_options=file_options(**given) if given else None)  # type: ignore[arg-type]
        describe = getattr(source.data, "describe", None)
        if callable(describe):
            click.echo(describe(), err=True)
    elif workload_name:
        if weights or data_spec or given or hf_output != "auto":
            raise ConfigError("--weights, --data, --hf-output and data file options go with --model, not --workload")
        source = registry.workload(workload_name)
    else:
        from ..user import UserWorkload
        from ._data_options import file_options

        assert model_spec is not None
        source = UserWorkload(model_spec, data_spec, weights, hf_output=hf_output,
                              data_options=file_options(**given) if given else None)  # type: ignore[arg-type]
        describe = getattr(source.data, "describe", None)
        if callable(describe):
            click.echo(describe(), err=True)
    from ..pipeline import quantize_to_dir

    result = quantize_to_dir(source, recipe, output, registry=registry, pm=pm, progress=not quiet,
                             allow_divergence=allow_divergence)
    m = result.metrics
    summary: dict[str, object] = {k: m.get(k) for k in ("fp32", "quantized", "sizes", "quantize_seconds") if k in m}
    click.echo(f"wrote {result.output_dir} ({', '.join(sorted(p.name for p in result.output_dir.iterdir()))})")
    integer = m.get("integer") or {}
    if "integer_share" in integer:
        summary["integer_share"] = integer["integer_share"]
        click.echo(f"in integer: {integer['integer_share']:.0%} of conv/matmul multiply-adds under ONNX Runtime "
                   f"({integer['integer_layers']}/{integer['compute_layers']} layers; capture: "
                   f"{(m.get('engine') or {}).get('capture')})")
    click.echo(json.dumps(summary, sort_keys=True))
