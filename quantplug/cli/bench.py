"""``quantplug bench``: FP32 vs INT8 vs ONNX Runtime's quantizer, in-process and served, with the targets."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.option("--workloads", default="resnet18,resnet50,minilm", show_default=True, metavar="A,B,...",
              help="Comma-separated workload names (see `quantplug plugins`).")
@click.option("--batch", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Request batch: served load tests and the in-process comparison (batch 1 is measured too).")
@click.option("--pairs", type=click.IntRange(1, 20), default=None, help="A/B pairs per served comparison "
              "[default: 3; --quick: 1].")
@click.option("--duration", type=click.FloatRange(1, 600), default=None,
              help="Seconds per locust run [default: 15; --quick: 3].")
@click.option("--users", type=click.IntRange(1, 64), default=2, show_default=True, help="Concurrent locust users.")
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="ONNX Runtime intra-op threads, in-process and in Triton [default: the CPUs available].")
@click.option("--calibrator", default=None, metavar="NAME|auto",
              help="Calibrator of the static INT8 models; auto picks the best on a validation split "
                   "[default: auto; --quick: percentile].")
@click.option("--calib-batches", type=click.IntRange(1, 10_000), default=None,
              help="Calibration batches (engine and peer alike) [default: 128; --quick: 8].")
@click.option("--calib-batch-size", type=click.IntRange(1, 1024), default=None,
              help="Items per calibration batch [default: 4; --quick: 2].")
@click.option("--no-served-peer", is_flag=True, help="Do not load-test the peer model on Triton.")
@click.option("--quick", is_flag=True, help="A smoke run of the whole flow: tiny durations, 1 pair, few repeats, "
              "few calibration batches, a 32-item test subset.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"),
              show_default=True, help="Folder for bench.json, bench.md, the models and the served repository.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--zoo", is_flag=True, help="Instead: the model zoo (Hugging Face architectures from small configs "
              "and a segmenter, captured as they come): integer share, top-1 agreement, INT8/FP32 time and "
              "the peer, into OUTPUT/zoo.json and zoo.md.")
def command(workloads: str, batch: int, pairs: int | None, duration: float | None, users: int, threads: int | None,
            calibrator: str | None, calib_batches: int | None, calib_batch_size: int | None,
            no_served_peer: bool, quick: bool, output: Path,
            no_progress: bool, zoo: bool) -> None:
    """Benchmark each workload: FP32, quantplug INT8 (static PTQ; minilm also dynamic) and ONNX Runtime's own
    quantize_static output as a peer, in-process (ONNX Runtime, alternated rounds, at --batch and batch 1)
    and served (embedded Triton, locust A/B pairs at --batch), plus quality on the held-out test set.
    Writes OUTPUT/bench.json and OUTPUT/bench.md and prints the table with each target met or not met."""
    if zoo:
        _zoo(output, batch, threads, calib_batches, quick, not no_progress)
        return
    from ..bench import BenchConfig, run_bench
    from ..bench.report import format_markdown

    names = tuple(w.strip() for w in workloads.split(",") if w.strip())
    settings: dict = {"output": output, "workloads": names, "batch": batch, "users": users,
                      "serve_peer": not no_served_peer, "progress": not no_progress}
    for key, value in (("pairs", pairs), ("duration_s", duration), ("threads", threads),
                       ("calibrator", calibrator), ("calib_batches", calib_batches),
                       ("calib_batch_size", calib_batch_size)):
        if value is not None:
            settings[key] = value
    if "duration_s" in settings and "warmup_s" not in settings:
        settings["warmup_s"] = min(2.0, settings["duration_s"] / 5)
    cfg = BenchConfig.quick_config(**settings) if quick else BenchConfig(**settings)
    if cfg.calibrator != "auto":
        from ..registry import build_registry

        build_registry().calibrator(cfg.calibrator)  # an unknown name fails now, in one line
    data = run_bench(cfg)
    click.echo(format_markdown(data))
    click.echo(f"wrote {cfg.output / 'bench.json'} and {cfg.output / 'bench.md'}")


def _zoo(output: Path, batch: int, threads: int | None, calib_batches: int | None, quick: bool, progress: bool) -> None:
    from ..bench.zoo import ZOO, format_zoo, run_zoo, write_zoo

    settings = {"batch": batch, "threads": threads or 2, "rounds": 2 if quick else 5, "reps": 3 if quick else 5,
                "calib_batches": calib_batches or (4 if quick else 16)}
    rows = run_zoo(ZOO, batch=batch, threads=settings["threads"], rounds=settings["rounds"], reps=settings["reps"],
                   calib_batches=settings["calib_batches"], progress=progress)
    path = write_zoo(rows, output, settings)
    click.echo(format_zoo(rows))
    click.echo(f"wrote {path}")
