"""``quantplug demo``: the main job on the embedded default."""

from __future__ import annotations

import click


@click.command("demo")
def command() -> None:
    """Run the main job end to end (train, quantize, serve on Triton, verify, load-test, report)."""
    from ..cli.plugins import plugin_table

    click.echo("quantplug demo: the pipeline is not built yet. Once it is, this command will:")
    for step in (
        "train a ResNet-style FP32 model on real MNIST digits (cached)",
        "quantize it with ptq, qat, qad, dynamic (INT8) and W4A8 QAT",
        "write FP32 and INT8 models into model_repository/ and start the embedded Triton server",
        "measure served accuracy over gRPC and load-test FP32 vs INT8 with locust",
        "print the benchmark table and write report.json and a PNG chart",
    ):
        click.echo(f"  - {step}")
    click.echo("\nLoaded plugins:")
    for row in plugin_table():
        click.echo(f"  {row['name']}: {', '.join(row['hooks'])}")
