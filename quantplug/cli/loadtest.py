"""``quantplug loadtest``: baseline vs candidate under real gRPC load (locust), A B alternated pairs."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("loadtest")
@click.option("--url", required=True, metavar="HOST:PORT", help="Triton gRPC endpoint, e.g. 127.0.0.1:8001.")
@click.option("--baseline", required=True, metavar="MODEL", help="Model to compare against (e.g. the FP32 one).")
@click.option("--candidate", required=True, metavar="MODEL", help="Model under test (e.g. the INT8 one).")
@click.option("--users", default=2, show_default=True, type=int, help="Concurrent locust users.")
@click.option("--spawn-rate", default=None, type=float, help="Users started per second [default: all at once].")
@click.option("--duration", default=20.0, show_default=True, type=float, help="Seconds per run.")
@click.option("--warmup", default=0.0, show_default=True, type=float,
              help="Seconds at the start of each run left out of the statistics.")
@click.option("--batch-size", default=1, show_default=True, type=int, help="Rows per request.")
@click.option("--input-shape", default=None, help="Dims without the batch (3x224x224 or name:dims,...); "
              "default: from the model metadata.")
@click.option("--inputs", "inputs_npz", default=None, type=click.Path(dir_okay=False),
              help=".npz of real inputs keyed by input name (default: random).")
@click.option("--pairs", default=3, show_default=True, type=int, help="Baseline/candidate pairs (A B A B ...).")
@click.option("--workers", default=0, show_default=True, type=int,
              help="Locust worker processes (distributed mode: a master plus N workers on 127.0.0.1).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the result JSON.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="Write an HTML report.")
@click.option("--png", "png_path", default=None, type=click.Path(dir_okay=False), help="Write a PNG chart.")
@click.option("--min-speedup", default=None, type=float,
              help="Exit 1 when the throughput speed-up (median of pairs) is below this. Any failed request "
                   "exits 1 as well.")
@click.option("--keep", "keep_dir", default=None, type=click.Path(file_okay=False),
              help="Keep the exact timings and locust logs of every run in this folder.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(url: str, baseline: str, candidate: str, users: int, spawn_rate: float | None, duration: float,
            warmup: float, batch_size: int, input_shape: str | None, inputs_npz: str | None, pairs: int,
            workers: int, json_path: str | None, html_path: str | None, png_path: str | None,
            min_speedup: float | None, keep_dir: str | None, no_progress: bool) -> None:
    """Load-test BASELINE and CANDIDATE on a running Triton over gRPC and report the speed-up.

    Runs are alternated (baseline, candidate, baseline, candidate, ...) so both see the same machine
    conditions; each pair's ratio is shown, the summary is the median of the pairs. Percentiles come from
    exact per-request times. Exit code: 0 on success, 1 when the gate fails (failed requests, or a
    speed-up below --min-speedup), 2 on a usage error, 130/143 when stopped by SIGINT/SIGTERM (every
    locust process ended, temp folders removed, the pairs finished so far in --json, marked
    "interrupted": true).
    """
    from ..loadtest import (
        GateFailedError,
        LoadTestInterrupted,
        format_pair,
        format_summary,
        run_ab,
    )
    from ..loadtest.interrupt import stop_on_signals

    def show_pair(record: dict) -> None:
        click.echo(format_pair(record) + "\n")

    with stop_on_signals():  # SIGINT and SIGTERM end the locust processes and keep the finished pairs
        try:
            result = run_ab(url, baseline, candidate, pairs=pairs, users=users, spawn_rate=spawn_rate,
                            duration_s=duration, batch_size=batch_size, workers=workers, warmup_s=warmup,
                            input_shape=input_shape, inputs=inputs_npz, min_speedup=min_speedup, folder=keep_dir,
                            progress=not no_progress, on_pair=show_pair)
        except LoadTestInterrupted as stopped:
            if stopped.result is not None:
                _write(stopped.result, json_path, png_path, html_path, partial=True)
            raise
        click.echo(format_summary(result))
        _write(result, json_path, png_path, html_path)
    if not result["gate"]["passed"]:
        raise GateFailedError(f"gate failed: {result['gate']['reason']}")


def _write(result: dict, json_path: str | None, png_path: str | None, html_path: str | None,
           partial: bool = False) -> None:
    """The result files; an interrupted run writes its JSON (``"interrupted": true``), charts only with a pair."""
    from ..loadtest import format_summary, write_html, write_json, write_png

    if partial and result["pairs"]:
        click.echo(format_summary(result))
    for path, writer in ((json_path, write_json), (png_path, write_png), (html_path, write_html)):
        if path and (writer is write_json or result["pairs"]):
            click.echo(f"wrote {writer(Path(path), result)}")
