"""``quantplug tune``: reach an accuracy budget automatically, cheapest first, saving the best as it goes."""

from __future__ import annotations

import click

from ._decide_options import load_model_and_workload, model_options


@click.command("tune")
@model_options
@click.option("--max-drop", type=float, required=True, metavar="PTS",
              help="Accepted drop of the metric on the validation split, in points.")
@click.option("--weight-bits", type=click.Choice(["8", "4"]), default="8", show_default=True)
@click.option("--target", default="onnxruntime", show_default=True,
              help="Backend whose scheme is quantized for (onnxruntime, tensorrt, or a plugin's).")
@click.option("--time-budget", type=float, default=None, metavar="MIN",
              help="Stop after this many minutes with the best configuration so far.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--calib-batches", type=int, default=64, show_default=True,
              help="Calibration batches per trial (raised with a warning when too few inputs).")
@click.option("--calib-batch-size", type=int, default=32, show_default=True)
@click.option("--val-size", type=int, default=500, show_default=True,
              help="Validation rows carved from the training data (at most a fifth of it).")
@click.option("--epochs", "qat_epochs", type=int, default=3, show_default=True, help="QAT/QAD epochs.")
@click.option("--measure-speed", is_flag=True,
              help="Also time every trial's exported model in ONNX Runtime (batch 1).")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Folder for the best model (quantize --output layout) and trials.json.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(workload: str | None, model_spec: str | None, data_spec: str | None, weights: str | None, max_drop: float,
            weight_bits: str, target: str, time_budget: float | None, seed: int, calib_batches: int,
            calib_batch_size: int, val_size: int, qat_epochs: int, measure_speed: bool, output: str,
            quiet: bool) -> None:
    """Find the cheapest quantization within --max-drop: PTQ with every calibrator, then per-layer
    fallback of the most sensitive layers, then QAT (labels) or QAD (no labels)."""
    from ..decide.tune import TuneOptions, Tuner, summary
    from ..registry import build_registry

    options = TuneOptions(max_drop=max_drop, weight_bits=int(weight_bits), target=target,
                          time_budget_min=time_budget, seed=seed, calib_batches=calib_batches,
                          calib_batch_size=calib_batch_size, val_size=val_size, qat_epochs=qat_epochs,
                          measure_speed=measure_speed, progress=not quiet)
    registry = build_registry()
    registry.backend(target)  # an unknown target fails now, listing the valid ones
    model, wl = load_model_and_workload(registry, workload, model_spec, data_spec, weights=weights, seed=seed, progress=not quiet)
    tuner = Tuner(model, wl, options, output, registry=registry, log=lambda m: click.echo(m, err=True))
    click.echo(f"advise: {tuner.advice.choice.upper()} ({tuner.advice.rule}); tuning cheapest first...", err=True)
    try:
        result = tuner.run()
    except KeyboardInterrupt:
        click.echo(f"Interrupted: the best configuration so far is in {output} (trials.json lists every trial).",
                   err=True)
        raise
    click.echo(summary(result))
