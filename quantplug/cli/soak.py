"""``quantplug soak``: an INT8 model served at saturation for minutes, malformed requests mixed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def _markdown(result: dict[str, Any]) -> str:
    s, r = result["settings"], result["soak"]

    def v(x: Any, unit: str = "") -> str:
        return "n/a" if x is None else f"{x:.2f}{unit}" if isinstance(x, float) else f"{x}{unit}"

    first, last = r.get("first_window", {}), r.get("last_window", {})
    rss = r.get("rss", {})
    lines = [
        f"# Soak: {s['model']} ({s['minutes']:g} min, batch {s['batch_size']}, {s['users']} users)",
        "",
        f"Machine: {result['machine']['cpu_model']}, {result['machine']['logical_cores']} logical cores. "
        f"Malformed requests every {s['malformed_interval_s']:g} s (one of each of {len(s['malformed_kinds'])} kinds).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| good requests | {r['good_requests']} |",
        f"| failures of good requests | {r['good_failures']} |",
        f"| malformed requests | {r.get('malformed_requests', 0)} "
        f"({'none accepted' if not r.get('malformed_accepted') else 'ACCEPTED: ' + str(r['malformed_accepted'])}) |",
        f"| p99 first / last {v(r.get('window_s'), ' s')} | {v(first.get('p99_ms'), ' ms')} / "
        f"{v(last.get('p99_ms'), ' ms')} (x{v(r.get('p99_last_over_first'))}) |",
        f"| server RSS first / last | {v(rss.get('server', {}).get('first_window_mib'), ' MiB')} / "
        f"{v(rss.get('server', {}).get('last_window_mib'), ' MiB')} |",
        f"| stubs RSS first / last | {v(rss.get('stubs', {}).get('first_window_mib'), ' MiB')} / "
        f"{v(rss.get('stubs', {}).get('last_window_mib'), ' MiB')} |",
        f"| server alive at the end | {r['server_alive_at_end']} |",
        "",
        f"Result: {'PASS' if r['passed'] else 'FAIL'}" + (f" ({r['server_exit']})" if r.get("server_exit") else ""),
    ]
    return "\n".join(lines) + "\n"


@click.command("soak")
@click.option("--minutes", type=click.FloatRange(0.1, 24 * 60), default=10.0, show_default=True,
              help="Length of the soak at saturation.")
@click.option("--workload", default="resnet18", show_default=True,
              help="Workload whose model is quantized (PTQ, INT8 for ONNX Runtime) and soaked.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Soak this (INT8) ONNX file instead of quantizing the workload's model.")
@click.option("--batch-size", type=click.IntRange(1, 64), default=8, show_default=True, help="Rows per good request.")
@click.option("--users", type=click.IntRange(1, 64), default=2, show_default=True, help="Concurrent locust users.")
@click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
              help="ONNX Runtime intra-op threads in Triton (0: automatic).")
@click.option("--malformed-interval", type=click.FloatRange(0.05, 60), default=1.0, show_default=True,
              help="Seconds between cycles of malformed requests.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("soak-results"),
              show_default=True, help="Folder for soak.json, soak.md, the model, the repository and the timings.")
@click.option("--no-progress", is_flag=True, help="No progress bars while quantizing.")
def command(minutes: float, workload: str, onnx_path: Path | None, batch_size: int, users: int, threads: int,
            malformed_interval: float, output: Path, no_progress: bool) -> None:
    """Serve an INT8 model at saturation for --minutes while malformed and hostile requests arrive.

    Reports (soak.json, soak.md): good requests and their failures (must be 0), malformed requests
    (each must be refused), p99 latency and the RSS of the server and its python-backend stubs in the
    first against the last minute. Exit 1 when a good request failed, a malformed one was accepted or
    the server died. Not part of `make test`: `make soak` runs it for 10 minutes.
    """
    from ..errors import LoadTestError
    from ..loadtest.interrupt import Interrupted, LoadTestInterrupted, stop_on_signals
    from ..loadtest.machine import machine_info
    from ..loadtest.preflight import server_version
    from ..loadtest.soak import MALFORMED_KINDS, soak_server
    from ..report import write_json_atomic, write_text_atomic
    from ..triton.repository import replace_model
    from ..triton.server import TritonServer

    output.mkdir(parents=True, exist_ok=True)
    model = f"soak_{workload.replace('-', '_')}_int8" if onnx_path is None else "soak_int8"
    if onnx_path is None:
        from ..pipeline import quantize_to_dir
        from ..plugins import get_plugin_manager
        from ..recipe import QuantRecipe
        from ..registry import build_registry

        registry = build_registry(get_plugin_manager())
        recipe = QuantRecipe(method="ptq", calibrator="percentile", target="onnxruntime", calib_batches=8,
                             calib_batch_size=4, seed=0)
        click.echo(f"quantizing {workload} (PTQ INT8 for ONNX Runtime)...", err=True)
        import shutil

        shutil.rmtree(output / "model", ignore_errors=True)
        quantize_to_dir(registry.workload(workload), recipe, output / "model", registry=registry,
                        progress=not no_progress, evaluate=False)
        onnx_path = output / "model" / "model.onnx"
    replace_model(output / "repository", model, onnx_path, max_batch_size=max(8, batch_size),
                  threads=threads or None)
    settings = {"model": model, "workload": workload if onnx_path.parent == output / "model" else None,
                "onnx": str(onnx_path), "minutes": minutes, "batch_size": batch_size, "users": users,
                "threads": threads, "malformed_interval_s": malformed_interval, "malformed_kinds": MALFORMED_KINDS}
    machine = machine_info()
    try:
        with stop_on_signals(), TritonServer(output / "repository") as server:
            soak = soak_server(server, model, output, minutes=minutes, batch_size=batch_size, users=users,
                               malformed_interval_s=malformed_interval, step=lambda s: click.echo(s, err=True))
            version = server_version(server.grpc_url) if server.is_running() else {}
    except Interrupted as e:
        raise LoadTestInterrupted(f"soak interrupted by {e}; server and locust stopped, no result written",
                                  e.signum) from None
    result = {"settings": settings, "machine": machine, "server": version, "soak": soak}
    click.echo(f"wrote {write_json_atomic(output / 'soak.json', result)}")
    md = _markdown(result)
    click.echo(f"wrote {write_text_atomic(output / 'soak.md', md)}")
    click.echo(md)
    if not soak["passed"]:
        error = LoadTestError(f"soak failed: {soak['good_failures']} failed good requests, malformed accepted: "
                              f"{soak.get('malformed_accepted') or 'none'}, server alive: {soak['server_alive_at_end']}")
        error.exit_code = 1
        raise error
