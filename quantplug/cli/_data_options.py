"""Options for ``--data FILE`` (an .npz, an image folder, a text file): how a file becomes model inputs.

``data_file_options`` adds them to a command; ``file_options`` turns their values into a
:class:`quantplug.data.FileOptions`. Shared by every command that reads data files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..errors import ConfigError

__all__ = ["DATA_HELP", "data_file_options", "file_options"]

DATA_HELP = ("Your data: an .npz of named inputs (optional 'labels'), a folder of images (optionally one "
             "sub-folder per class), a .txt file of sentences, or a factory package.module:make_data "
             "(see quantplug.user).")


def _floats(value: str | None, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"{what} {value!r} must be numbers separated by commas, e.g. 0.485,0.456,0.406") from None


def file_options(holdout: float | None = None, image_size: str | None = None, image_mean: str | None = None,
                 image_std: str | None = None, channels: int | None = None, tokenizer: str | None = None,
                 max_length: int | None = None, seed: int | None = None) -> Any:
    """A :class:`quantplug.data.FileOptions` from the option values (None: the default)."""
    from ..data import FileOptions

    size = _floats(image_size, "--image-size")
    if size is not None and (len(size) not in (1, 2) or any(v != int(v) for v in size)):
        raise ConfigError(f"--image-size {image_size!r} must be SIZE or HEIGHT,WIDTH in pixels, e.g. 224 or 224,224")
    values: dict[str, Any] = {
        "holdout": holdout, "image_mean": _floats(image_mean, "--image-mean"),
        "image_std": _floats(image_std, "--image-std"), "channels": channels, "tokenizer": tokenizer,
        "max_length": max_length, "seed": seed,
        "image_size": None if size is None else (int(size[0]), int(size[-1])),
    }
    return FileOptions(**{k: v for k, v in values.items() if v is not None})


def data_file_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--holdout``, ``--image-size``, ``--image-mean``, ``--image-std``, ``--channels``, ``--tokenizer``,
    ``--max-length``."""
    options = [
        click.option("--max-length", type=int, default=None,
                     help="Text file: tokens per sentence, padded and truncated (default 128)."),
        click.option("--tokenizer", type=click.Path(file_okay=False), default=None,
                     help="Text file: a folder with a Hugging Face tokenizer (default: the hf: model folder)."),
        click.option("--channels", type=click.Choice(["1", "3"]), default=None, callback=lambda c, p, v: int(v) if v else None,
                     help="Image folder: 1 (grey) or 3 (RGB) channels (default: the model's config, else 3)."),
        click.option("--image-std", default=None, metavar="S[,S,S]",
                     help="Image folder: per-channel std after scaling to 0..1 (overrides the model's processor)."),
        click.option("--image-mean", default=None, metavar="M[,M,M]",
                     help="Image folder: per-channel mean after scaling to 0..1 (overrides the model's processor)."),
        click.option("--image-size", default=None, metavar="H,W",
                     help="Image folder: resize to HEIGHT,WIDTH (default: the model's processor, else the first image)."),
        click.option("--holdout", type=float, default=None,
                     help="Data file: fraction held out for scoring (default 0.2; seeded, reproducible split)."),
    ]
    for option in options:
        f = option(f)
    return f
