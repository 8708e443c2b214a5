"""``quantplug demo``: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Where quantized models, report.json, report.md and report.png go.")
@click.option("--repository", type=click.Path(file_okay=False, path_type=Path), default=Path("model_repository"),
              show_default=True, help="Triton model repository to write and serve.")
@click.option("--seeds", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Seeds for the INT4 comparison table.")
@click.option("--pairs", type=click.IntRange(1, 20), default=3, show_default=True,
              help="A/B pairs of the full load test (best INT8 row).")
@click.option("--duration", type=click.FloatRange(1, 600), default=10.0, show_default=True,
              help="Seconds per load-test run (full A/B); the other rows get half.")
@click.option("--quick", is_flag=True, help="A short smoke run: 1 seed, 1 pair, short load tests, 1 QAT epoch.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def command(output: Path, repository: Path, seeds: int, pairs: int, duration: float, quick: bool,
            no_progress: bool) -> None:
    """Run the main job end to end: train an FP32 ResNet on real MNIST, quantize it with ptq, qat, qad,
    dynamic and W4A8 qat, serve everything on the bundled Triton, measure served accuracy over gRPC,
    load-test FP32 vs INT8 with locust, and write report.json, report.md and report.png."""
    from ..demo import DemoConfig, run_demo

    cfg = DemoConfig(output=output, repository=repository, seeds=seeds, pairs=pairs, duration_s=duration,
                     short_duration_s=max(1.0, duration / 2), progress=not no_progress)
    if quick:
        cfg.seeds, cfg.pairs, cfg.duration_s, cfg.short_duration_s = 1, 1, 3.0, 2.0
        cfg.qat_epochs = cfg.int4_qat_epochs = 1
        cfg.calib_batches = 16
    run_demo(cfg)
