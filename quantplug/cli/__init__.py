"""The ``quantplug`` command line. Each command is its own module in this package exposing ``command``.

The group is built inside :func:`build_cli` (no import-time side effects); command modules keep heavy
imports inside their functions so ``quantplug --help`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from ..errors import QuantplugError

__all__ = ["build_cli", "main"]


def build_cli() -> click.Group:
    from .. import __version__

    @click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.version_option(__version__, prog_name="quantplug")
    def cli() -> None:
        """quantplug: quantize a trained PyTorch model (PTQ, QAT, QAD, dynamic; INT8/INT4 weights),
        export QDQ ONNX, serve it on Triton and prove the speed-up under gRPC load."""

    package = sys.modules[__name__]
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            cli.add_command(command)
    return cli


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """Warnings from quantplug are meant for the person at the terminal: one line, no source echo."""
    return f"Warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    import warnings

    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    cli = build_cli()
    try:
        cli.main(args=argv, prog_name="quantplug", standalone_mode=False)
    except QuantplugError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
