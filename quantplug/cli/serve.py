"""``quantplug serve``: serve a model repository with the bundled Triton until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from types import FrameType

import click


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("serve")
@click.option("--repository", "repository", default="model_repository", show_default=True,
              type=click.Path(file_okay=False), help="The Triton model repository folder.")
@click.option("--grpc-port", type=int, default=8001, show_default=True, help="0 picks a free port.")
@click.option("--http-port", type=int, default=8000, show_default=True, help="0 picks a free port.")
@click.option("--metrics-port", type=int, default=8002, show_default=True, help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the server to the network (no authentication).")
@click.option("--strict", is_flag=True, help="Exit if any model fails to load (default: serve the others).")
@click.option("--log", "show_log", is_flag=True, help="Echo the server's log to stderr.")
@click.option("--log-verbose", type=int, default=0, show_default=True, help="Triton's --log-verbose level.")
def command(repository: str, grpc_port: int, http_port: int, metrics_port: int, host: str, strict: bool,
            show_log: bool, log_verbose: int) -> None:
    """Serve REPOSITORY with the real tritonserver binary (python backend, ONNX Runtime inside).

    Models are loaded at start (model-control mode "none"): the load/unload endpoints are closed, so
    clients cannot change what is served. Stop with Ctrl-C or SIGTERM; no process is left behind.
    """
    from ..errors import ServerError
    from ..triton.server import TritonServer

    echo = (lambda line: click.echo(line, err=True)) if show_log else None
    server = TritonServer(repository, grpc_port=grpc_port or None, http_port=http_port or None,
                          metrics_port=metrics_port or None, host=host, log_verbose=log_verbose,
                          require_all=strict, echo=echo)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.start()
        for name, line in sorted(server.failed_models.items()):
            click.echo(f"Model {name} failed to load: {line}", err=True)
        ready = server.ready_models()
        click.echo(f"Serving {len(ready)} model(s) from {repository}: {', '.join(ready)}")
        click.echo(f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n  metrics {server.metrics_url}")
        click.echo("Ready. Press Ctrl-C to stop.", err=False)
        while server.is_running():
            time.sleep(0.5)
        code = server.process.returncode if server.process else None
        errors = [ln for ln in server.log if ln[:1] == "E"]
        raise ServerError(f"tritonserver exited unexpectedly (code {code}): {errors[-1] if errors else 'no error line'}")
    except KeyboardInterrupt:
        click.echo("Stopping Triton...", err=True)
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    click.echo("Stopped.", err=True)
