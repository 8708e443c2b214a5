"""``quantplug evaluate``: the workload's metric of a model as served (its held-out set over gRPC)."""

from __future__ import annotations

import json

import click


@click.command("evaluate")
@click.option("--url", default="127.0.0.1:8001", show_default=True, help="Triton gRPC address.")
@click.option("--model", required=True, help="Served model name.")
@click.option("--workload", required=True, help="Workload whose held-out set and metric to use.")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Samples per request (clamped to the model's max_batch_size).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(url: str, model: str, workload: str, batch_size: int, as_json: bool) -> None:
    """Score MODEL on the server at URL with WORKLOAD's held-out set: the accuracy as deployed."""
    from ..registry import build_registry
    from ..triton.client import evaluate_served

    wl = build_registry().workload(workload)
    result = evaluate_served(url, model, wl, batch_size=batch_size, progress=not as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    metric = getattr(wl, "metric", "accuracy")
    value = result.get(metric)
    shown = f"{value:.2f}" if isinstance(value, float) else str(value)
    click.echo(f"{model} on {workload}: {metric} {shown} over {result['count']} samples "
               f"({result['batches']} requests of <= {result['batch_size']}, {result['seconds']:.2f} s)")
