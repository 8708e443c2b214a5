"""``quantplug infer``: send one request (an .npz file or random input) over gRPC; print outputs and latency."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import click
import numpy as np


def random_inputs(config: Any, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching a served ``ModelConfig`` (dynamic non-batch dims set to 1)."""
    from tritonclient.grpc import model_config_pb2 as pb
    from tritonclient.utils import triton_to_np_dtype

    rng = np.random.default_rng(seed)
    out = {}
    for t in config.input:
        dims = [d if d > 0 else 1 for d in t.dims]
        shape = ([batch_size] if config.max_batch_size > 0 else []) + dims
        dtype = np.dtype(triton_to_np_dtype(pb.DataType.Name(t.data_type).removeprefix("TYPE_")))
        if dtype.kind == "f":
            out[t.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            out[t.name] = rng.integers(0, 2, size=shape).astype(dtype)  # ids/masks: 0/1 are always valid
        else:
            out[t.name] = np.zeros(shape, dtype=dtype)
    return out


def load_npz(path: Path) -> dict[str, np.ndarray]:
    from ..errors import ConfigError

    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path} as .npz ({e}); save inputs with numpy.savez(path, name=array)") from e


@click.command("infer")
@click.option("--url", default="127.0.0.1:8001", show_default=True, help="Triton gRPC address.")
@click.option("--model", required=True, help="Served model name.")
@click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help=".npz with one array per input name [default: random input].")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Batch of the random input.")
@click.option("--repeat", type=int, default=10, show_default=True, help="Requests to time (median reported).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (outputs as lists).")
def command(url: str, model: str, input_file: Path | None, batch_size: int, repeat: int, as_json: bool) -> None:
    """Run MODEL on the server at URL and print its outputs and request latency."""
    from ..triton.client import Client

    with Client(url) as client:
        inputs = load_npz(input_file) if input_file else random_inputs(client.config(model), batch_size)
        outputs = client.infer(model, inputs)  # also warms the connection
        times = []
        for _ in range(max(repeat, 1)):
            t0 = time.perf_counter()
            client.infer(model, inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    latency = {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3), "requests": len(times)}
    if as_json:
        click.echo(json.dumps({"model": model, "outputs": {k: v.tolist() for k, v in outputs.items()},
                               "latency": latency}))
        return
    for name, arr in inputs.items():
        click.echo(f"input  {name}: shape {list(arr.shape)} {arr.dtype}")
    for name, arr in outputs.items():
        click.echo(f"output {name}: shape {list(arr.shape)} {arr.dtype}")
        with np.printoptions(precision=4, suppress=True, threshold=20, edgeitems=3):
            click.echo(f"  {arr}")
        if arr.ndim == 2 and arr.dtype.kind == "f":
            click.echo(f"  argmax per row: {arr.argmax(axis=1).tolist()[:16]}")
    click.echo(f"latency: median {latency['median_ms']} ms, min {latency['min_ms']} ms over {len(times)} requests")
