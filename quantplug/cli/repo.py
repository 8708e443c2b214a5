"""``quantplug repo``: add quantized models to a Triton model repository, and check a repository."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("repo")
def command() -> None:
    """Write and check Triton model repositories."""


@command.command("add")
@click.option("--from", "source", required=True, type=click.Path(path_type=Path),
              help="Output folder of `quantplug quantize` (model.onnx, model_fp32.onnx, recipe.json).")
@click.option("--name", required=True, help="Base name: adds NAME_fp32 and NAME_int8.")
@click.option("--repository", default="model_repository", show_default=True, type=click.Path(path_type=Path))
@click.option("--backend", default="onnxruntime", show_default=True, help="onnxruntime or tensorrt (or a plugin's, e.g. openvino).")
@click.option("--flavour", default=None, help="onnxruntime/openvino: embedded (default) or container.")
@click.option("--accelerator", type=click.Choice(["tensorrt"]), default=None,
              help="container flavour: ONNX Runtime's TensorRT execution accelerator (INT8).")
@click.option("--max-batch-size", type=int, default=64, show_default=True)
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True,
              help="How long an idle model waits to grow a batch; queued requests never wait longer.")
@click.option("--instances", type=int, default=1, show_default=True, help="Model instances.")
@click.option("--kind", type=click.Choice(["KIND_CPU", "KIND_GPU", "KIND_AUTO"]), default=None)
@click.option("--threads", type=int, default=None, help="Intra-op threads per instance (0/unset: auto).")
@click.option("--defer-build", is_flag=True, help="tensorrt without a GPU: write model.onnx + build.json for "
              "deploy/build_engines.sh instead of the plan.")
def add(source: Path, name: str, repository: Path, backend: str, flavour: str | None, accelerator: str | None,
        max_batch_size: int, max_queue_delay_us: int, instances: int, kind: str | None, threads: int | None,
        defer_build: bool) -> None:
    """Add the FP32 baseline and the INT8 model of a quantize output folder, as new versions.

    Both are staged next to the repository (in .REPOSITORY.staging/, where Triton does not look) and
    land together: if this is killed while landing, the next `repo add` or `serve` finishes the pair,
    and `repo check` reports it until then.
    """
    from ..triton.repository import add_from_output

    options: dict[str, object] = {}
    if accelerator:
        options["accelerator"] = accelerator
    if defer_build:
        options["defer_build"] = True
    added = add_from_output(repository, source, name, backend=backend, flavour=flavour,
                            max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                            instance_count=instances, kind=kind, threads=threads, options=options)
    for tag, path in added.items():
        click.echo(f"{tag}: {path.parent.name} version {path.name} -> {path}")
    click.echo(f"Serve it: quantplug serve --repository {repository}")


@command.command("check")
@click.argument("repository", type=click.Path(path_type=Path))
@click.option("--repair", is_flag=True, help="First finish or remove what a killed `repo add` left (an "
              "interrupted landing, staging folders, hidden staging debris of older versions in the root).")
def check(repository: Path, repair: bool) -> None:
    """Validate every model of REPOSITORY (ours or hand-written); exit 2 if anything is wrong.

    Also reported: what a killed `repo add` left, i.e. a pair half landed (one model new, one old),
    staging folders next to the repository, hidden folders in it (Triton tries to load those).
    """
    from ..errors import RepositoryError
    from ..triton.repository import check_repository, repair_repository

    if repair and repository.is_dir():
        for line in repair_repository(repository):
            click.echo(f"Repaired: {line}")
    problems = check_repository(repository)
    if not problems:
        click.echo(f"{repository}: OK")
        return
    for problem in problems[:-1]:
        click.echo(f"Error: {problem}", err=True)
    raise RepositoryError(problems[-1] if len(problems) == 1 else
                          f"{problems[-1]} ({len(problems)} problems in {repository})")
