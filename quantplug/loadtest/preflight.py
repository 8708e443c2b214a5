"""Checks before any locust process starts: the URL, the server, the model, the request shapes.

A load test that starts against a wrong URL or an unknown model only produces a wall of failures;
these checks turn that into one line naming the problem and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, LoadTestError
from .inputs import InputSpec, resolve_inputs

__all__ = ["ModelInfo", "parse_url", "describe_model", "request_specs", "server_version", "warm_up"]

_URL = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")


def parse_url(url: str) -> tuple[str, int]:
    """``HOST:PORT`` (a gRPC endpoint, no scheme) -> (host, port)."""
    text = url.strip()
    for scheme in ("grpc://", "http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    m = _URL.match(text)
    port = int(m.group("port")) if m else 0
    if m is None or not 0 < port < 65536:
        raise ConfigError(f"bad --url {url!r}: give the Triton gRPC endpoint as HOST:PORT, e.g. 127.0.0.1:8001")
    return m.group("host"), port


@dataclass(frozen=True)
class ModelInfo:
    name: str
    max_batch_size: int
    inputs: list[dict[str, Any]]  # metadata inputs: name, datatype, shape (with -1 for the batch)
    outputs: list[str]
    platform: str
    backend: str


def _client(url: str, timeout_s: float) -> Any:
    import tritonclient.grpc as grpcclient

    host, port = parse_url(url)
    return grpcclient.InferenceServerClient(f"{host}:{port}")


def _live(client: Any, url: str, timeout_s: float) -> None:
    from tritonclient.utils import InferenceServerException

    try:
        live = client.is_server_live(client_timeout=timeout_s)
    except InferenceServerException as e:
        raise LoadTestError(f"cannot reach Triton at {url} over gRPC ({_short(e)}): start the server "
                            f"(quantplug serve) or fix --url") from e
    if not live:
        raise LoadTestError(f"Triton at {url} answers but is not live: check its log")


def describe_model(url: str, model: str, timeout_s: float = 10.0) -> ModelInfo:
    """The model's inputs, outputs and batching, read from the running server; one-line errors otherwise."""
    from tritonclient.utils import InferenceServerException

    client = _client(url, timeout_s)
    try:
        _live(client, url, timeout_s)
        try:
            ready = client.is_model_ready(model, client_timeout=timeout_s)
        except InferenceServerException:
            ready = False
        if not ready:
            try:
                index = client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
                ready_names = sorted(m["name"] for m in index.get("models", []) if m.get("state") == "READY")
            except InferenceServerException:
                ready_names = []
            raise LoadTestError(f"model {model!r} is not ready on Triton at {url}: ready models are "
                                f"{', '.join(ready_names) or 'none'}; check the name or the server log")
        meta = client.get_model_metadata(model, as_json=True, client_timeout=timeout_s)
        config = client.get_model_config(model, as_json=True, client_timeout=timeout_s).get("config", {})
    finally:
        client.close()
    return ModelInfo(
        name=model,
        max_batch_size=int(config.get("max_batch_size", 0) or 0),
        inputs=[{"name": i["name"], "datatype": i["datatype"], "shape": [int(d) for d in i.get("shape", [])]}
                for i in meta.get("inputs", [])],
        outputs=[o["name"] for o in meta.get("outputs", [])],
        platform=str(meta.get("platform", "")),
        backend=str(config.get("backend", "")),
    )


def request_specs(info: ModelInfo, batch_size: int, input_shape: Any = None) -> list[InputSpec]:
    return resolve_inputs(info.inputs, info.max_batch_size, batch_size, input_shape, model=info.name)


def server_version(url: str, timeout_s: float = 10.0) -> dict[str, str]:
    client = _client(url, timeout_s)
    try:
        _live(client, url, timeout_s)
        meta = client.get_server_metadata(as_json=True, client_timeout=timeout_s)
    finally:
        client.close()
    return {"name": str(meta.get("name", "")), "version": str(meta.get("version", ""))}


def warm_up(url: str, model: str, arrays: dict[str, Any], specs: list[InputSpec], requests: int = 2,
            timeout_s: float = 60.0) -> str | None:
    """Send a few requests so the model's first-call costs stay out of the measurement.

    Returns the server's error text when the model fails (the load test then counts its failures),
    None when it answered.
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = _client(url, timeout_s)
    inputs = []
    for s in specs:
        inp = grpcclient.InferInput(s.name, list(s.shape), s.datatype)
        inp.set_data_from_numpy(arrays[s.name])
        inputs.append(inp)
    error = None
    try:
        for _ in range(requests):
            try:
                client.infer(model, inputs, client_timeout=timeout_s)
            except InferenceServerException as e:
                error = _short(e)
    finally:
        client.close()
    return error


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."
