"""``quantplug sensitivity``: per-layer quantization sensitivity as a table, a PNG bar chart and JSON."""

from __future__ import annotations

import click

from ._decide_options import load_model_and_workload, model_options


@click.command("sensitivity")
@model_options
@click.option("--weight-bits", type=click.Choice(["8", "4"]), default="8", show_default=True,
              help="Precision tested per layer (4: the other layers stay INT8; 8: the others stay FP32).")
@click.option("--target", default="onnxruntime", show_default=True)
@click.option("--calibrator", default="percentile", show_default=True)
@click.option("--calib-batches", type=int, default=16, show_default=True)
@click.option("--val-size", type=int, default=500, show_default=True,
              help="Validation rows carved from the training data.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="The PNG bar chart to write.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the per-layer results as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(workload: str | None, model_spec: str | None, data_spec: str | None, weights: str | None, weight_bits: str, target: str,
            calibrator: str, calib_batches: int, val_size: int, seed: int, output: str, json_path: str | None,
            quiet: bool) -> None:
    """Quantize one layer at a time and show how much each one costs (most sensitive first)."""
    from ..decide.sensitivity import plot_sensitivity, run_sensitivity, sensitivity_table
    from ..registry import build_registry
    from ..report.io import write_json_atomic

    registry = build_registry()
    registry.backend(target)  # unknown names fail before the model loads
    registry.calibrator(calibrator)
    model, wl = load_model_and_workload(registry, workload, model_spec, data_spec, weights=weights, seed=seed, progress=not quiet)
    report = run_sensitivity(model, wl, weight_bits=int(weight_bits), target=target, calibrator=calibrator,
                             calib_batches=calib_batches, val_size=val_size, seed=seed, registry=registry,
                             progress=not quiet)
    click.echo(f"{report.workload}: FP32 validation {report.metric} {report.fp_score:.2f} on {report.val_rows} "
               f"rows; each layer alone at {'INT4 weights' if report.weight_bits == 4 else 'INT8'}:")
    click.echo(sensitivity_table(report.layers, report.metric))
    plot_sensitivity(report.layers, output,
                     title=f"{report.workload}: per-layer drop ({report.metric}, validation split)")
    click.echo(f"plot: {output}")
    if json_path:
        write_json_atomic(json_path, report.to_dict())
        click.echo(f"json: {json_path}")
