"""``quantplug serve``: serve a model repository with the bundled Triton until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from types import FrameType

import click

_HTTP_WARNING = ("{what} is on: the bundled Triton 2.51 crashes (SIGSEGV) on one form-encoded request body of "
                 "about 4 MB or more sent to it, so any local client can stop this server; use it with trusted "
                 "clients only (gRPC is not affected)")
_APIS = ("shared-memory", "trace", "logging")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("serve")
@click.option("--repository", "repository", default="model_repository", show_default=True,
              type=click.Path(file_okay=False), help="The Triton model repository folder.")
@click.option("--grpc-port", type=int, default=8001, show_default=True, help="0 picks a free port.")
@click.option("--http", "http", is_flag=True,
              help="Also serve Triton's HTTP API. Unsafe with untrusted local clients: one form-encoded "
                   "body of ~4 MB crashes this Triton release.")
@click.option("--http-port", type=int, default=None, help="With --http [default: 8000]; 0 picks a free port.")
@click.option("--metrics", "metrics", is_flag=True,
              help="Also serve Prometheus metrics (same HTTP library, same crash as --http).")
@click.option("--metrics-port", type=int, default=None, help="With --metrics [default: 8002]; 0 picks a free port.")
@click.option("--open-api", "open_apis", multiple=True, type=click.Choice(_APIS),
              help="Open a restricted Triton API to every client (repeatable). Closed by default: "
                   "registering shared memory lets a client abort the server.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the server to the network (no authentication).")
@click.option("--strict", is_flag=True, help="Exit if any model fails to load (default: serve the others).")
@click.option("--log", "show_log", is_flag=True, help="Echo the server's log to stderr.")
@click.option("--log-verbose", type=int, default=0, show_default=True, help="Triton's --log-verbose level.")
def command(repository: str, grpc_port: int, http: bool, http_port: int | None, metrics: bool,
            metrics_port: int | None, open_apis: tuple[str, ...], host: str, strict: bool, show_log: bool,
            log_verbose: int) -> None:
    """Serve REPOSITORY with the real tritonserver binary (python backend, ONNX Runtime inside).

    \b
    What clients can reach (defaults):
      - gRPC only. HTTP (--http) and metrics (--metrics) are off: the bundled Triton 2.51 crashes on
        one form-encoded HTTP body of about 4 MB, so with them on any local client can stop the server.
      - Models are loaded at start (model-control mode "none"): load/unload requests are refused.
      - The shared-memory, trace and logging APIs are restricted (Triton's restricted-protocol
        options, with a secret header nobody is given); --open-api opens one to every client.

    A crash is reported with its signal and the server's last log lines (exit 1). Stop with Ctrl-C or
    SIGTERM; no process is left behind, and work folders left by a killed run are removed at start.
    """
    from ..errors import ConfigError, ServerError
    from ..triton.server import TritonServer

    if http_port is not None and not http:
        raise ConfigError("--http-port needs --http (HTTP is off by default; the server speaks gRPC)")
    if metrics_port is not None and not metrics:
        raise ConfigError("--metrics-port needs --metrics (metrics are off by default)")
    http_port = 8000 if http_port is None else http_port
    metrics_port = 8002 if metrics_port is None else metrics_port
    echo = (lambda line: click.echo(line, err=True)) if show_log else None
    server = TritonServer(repository, grpc_port=grpc_port or None, http_port=http_port or None,
                          metrics_port=metrics_port or None, host=host, log_verbose=log_verbose,
                          require_all=strict, echo=echo, http=http, metrics=metrics, open_apis=open_apis)
    from ..triton.cpu_check import repository_cpu_warnings

    for line in repository_cpu_warnings(repository):  # a VNNI-made model on a CPU that saturates
        click.echo(f"Warning: {line}", err=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.start()
        for folder in server.cleaned_workdirs:
            click.echo(f"Removed the work folder of a killed run: {folder}", err=True)
        for line in server.recovered:
            click.echo(f"Repository: {line}", err=True)
        for name in sorted(server.ignored_folders):
            click.echo(f"Warning: ignored the hidden folder {name} in {repository} (not a model; "
                       "`quantplug repo check --repair` removes staging debris)", err=True)
        for what, on in (("HTTP", http), ("metrics", metrics)):
            if on:
                click.echo(f"Warning: {_HTTP_WARNING.format(what=what)}", err=True)
        for api in open_apis:
            click.echo(f"Warning: the {api} API is open to every client (--open-api {api})", err=True)
        for name, line in sorted(server.failed_models.items()):
            click.echo(f"Model {name} failed to load: {line}", err=True)
        ready = server.ready_models()
        click.echo(f"Serving {len(ready)} model(s) from {repository}: {', '.join(ready)}")
        click.echo(f"  gRPC    {server.grpc_url}")
        if http:
            click.echo(f"  HTTP    {server.http_url}")
        if metrics:
            click.echo(f"  metrics {server.metrics_url}")
        click.echo("Ready. Press Ctrl-C to stop.", err=False)
        while server.is_running():
            time.sleep(0.5)
        error = ServerError(server.exit_report())
        error.exit_code = 1  # the server died: a result to report, not a usage error
        raise error
    except KeyboardInterrupt:
        click.echo("Stopping Triton...", err=True)
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    click.echo("Stopped.", err=True)
