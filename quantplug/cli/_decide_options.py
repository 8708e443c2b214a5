"""Options shared by ``advise``, ``tune`` and ``sensitivity``: how a model and its data are named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..errors import ConfigError


def model_args_from(workload: str | None, model_spec: str | None, data_spec: str | None) -> tuple[str, ...]:
    """The ``--workload W`` or ``--model SPEC --data SPEC`` part of a command line."""
    if workload and (model_spec or data_spec):
        raise ConfigError("give either --workload or --model/--data, not both")
    if workload:
        return ("--workload", workload)
    if model_spec or data_spec:
        if not (model_spec and data_spec):
            raise ConfigError("--model and --data go together; give both (or --workload W)")
        return ("--model", model_spec, "--data", data_spec)
    return ("--workload", "mnist-cnn")


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--workload W`` or ``--model SPEC --data SPEC``."""
    f = click.option("--weights", default=None, type=click.Path(dir_okay=False),
                     help="state_dict for --model (torch.save).")(f)
    f = click.option("--data", "data_spec", default=None, metavar="SPEC",
                     help="Your data: an .npz, a folder of images, a .txt file of sentences, or "
                          "package.module:make_data (see quantplug.user).")(f)
    f = click.option("--model", "model_spec", default=None, metavar="SPEC",
                     help="Your model: hf:DIR (a Hugging Face model folder) or package.module:build.")(f)
    f = click.option("--workload", default=None, help="A registered workload (see `quantplug plugins`).")(f)
    return f


def load_model_and_workload(registry: Any, workload: str | None, model_spec: str | None, data_spec: str | None,
                            *, weights: str | None = None, seed: int = 0, progress: bool = True) -> tuple[Any, Any]:
    """The FP32 model and the workload-like object that provides its data and metric."""
    model_args_from(workload, model_spec, data_spec)  # validates the combination
    if workload is None and model_spec is None:
        raise ConfigError("name the model: --workload W (see `quantplug plugins`) or --model SPEC --data SPEC|FILE")
    if workload is not None:
        if weights:
            raise ConfigError("--weights goes with --model, not --workload")
        wl = registry.workload(workload)
        return wl.build_model(seed=seed, progress=progress), wl
    from ..user import UserWorkload

    assert model_spec is not None
    wl = UserWorkload(model_spec, data_spec, weights)
    return wl.build_model(seed=seed, progress=progress), wl
