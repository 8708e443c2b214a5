"""``quantplug quantize``: quantize a workload or your own model into a directory."""

from __future__ import annotations

import click


@click.command("quantize")
@click.option("--workload", "workload_name", help="A registered workload (see `quantplug plugins`).")
@click.option("--model", "model_spec", help="Your model factory, package.module:build (returns an nn.Module).")
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict for --model (torch.save).")
@click.option("--data", "data_spec", help="Your data factory, package.module:make_data (see quantplug.user).")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), help="A recipe.json to start from.")
@click.option("--method", help="ptq, qat, qad, dynamic or a plugin's method.")
@click.option("--calibrator", help="max, percentile, entropy, mse or a plugin's calibrator.")
@click.option("--target", help="onnxruntime or tensorrt (the scheme the runtime executes).")
@click.option("--weight-bits", type=int, help="4 or 8.")
@click.option("--calib-batches", type=int, help="Calibration batches (default 128; fewer warns).")
@click.option("--epochs", type=int, help="QAT/QAD epochs.")
@click.option("--lr-scale", type=float,
              help="QAT/QAD learning rate as a fraction of the model's training rate (default 0.1).")
@click.option("--train-batch-size", type=int, help="QAT/QAD batch size (default 64).")
@click.option("--seed", type=int, help="Seed for the model, data order and training.")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(workload_name: str | None, model_spec: str | None, weights: str | None, data_spec: str | None,
            recipe_file: str | None, method: str | None, calibrator: str | None, target: str | None,
            weight_bits: int | None, calib_batches: int | None, epochs: int | None, lr_scale: float | None,
            train_batch_size: int | None, seed: int | None, output: str, quiet: bool) -> None:
    """Quantize a workload (--workload) or your model (--model/--weights/--data) into OUTPUT:
    model.onnx (QDQ or dynamic), model_fp32.onnx, recipe.json and metrics.json."""
    import json

    from ..errors import ConfigError
    from ..plugins import get_plugin_manager
    from ..recipe import QuantRecipe
    from ..registry import build_registry

    if bool(workload_name) == bool(model_spec):
        raise ConfigError("give exactly one of --workload NAME or --model package.module:build")
    recipe = QuantRecipe.load(recipe_file) if recipe_file else QuantRecipe()
    changes = {k: v for k, v in {"method": method, "calibrator": calibrator, "target": target,
                                 "weight_bits": weight_bits, "calib_batches": calib_batches,
                                 "qat_epochs": epochs, "lr_scale": lr_scale, "train_batch_size": train_batch_size,
                                 "seed": seed}.items() if v is not None}
    recipe = recipe.replace(**changes)
    pm = get_plugin_manager()
    registry = build_registry(pm)
    registry.method(recipe.method)
    registry.calibrator(recipe.calibrator)
    registry.backend(recipe.target)
    if workload_name:
        if weights or data_spec:
            raise ConfigError("--weights and --data go with --model, not --workload")
        source = registry.workload(workload_name)
    else:
        from ..user import UserWorkload

        assert model_spec is not None
        source = UserWorkload(model_spec, data_spec, weights)
    from ..pipeline import quantize_to_dir

    result = quantize_to_dir(source, recipe, output, registry=registry, pm=pm, progress=not quiet)
    m = result.metrics
    summary = {k: m.get(k) for k in ("fp32", "quantized", "sizes", "quantize_seconds") if k in m}
    click.echo(f"wrote {result.output_dir} ({', '.join(sorted(p.name for p in result.output_dir.iterdir()))})")
    click.echo(json.dumps(summary, sort_keys=True))
