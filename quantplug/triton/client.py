"""gRPC client: one inference, model statistics, and served-accuracy evaluation of a workload.

The accuracy that counts is that of the model as deployed: :func:`evaluate_served` sends the workload's
held-out set through the server in batches and scores the served outputs with the workload's metric.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ServerError

__all__ = ["Client", "InferError", "evaluate_served", "infer", "model_statistics"]


class InferError(ServerError):
    """The server rejected or failed an inference request (the server's message is included)."""


class Client:
    """A thin wrapper over ``tritonclient.grpc.InferenceServerClient`` raising quantplug errors."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.timeout = timeout
        self._grpc = grpcclient
        self.raw = grpcclient.InferenceServerClient(url=url)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as e:
            msg = e.message() or str(e)
            if "failed to connect" in msg.lower() or "unavailable" in str(e.status()).lower():
                raise ServerError(f"no Triton server answers at {self.url} ({msg}); start one with "
                                  "`quantplug serve --repository DIR` or fix --url") from None
            raise InferError(f"{what} failed: {msg}") from None

    def config(self, model: str) -> Any:
        """The served ``ModelConfig`` protobuf of ``model``."""
        return self._call(f"config of model {model!r}", self.raw.get_model_config, model).config

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tritonclient.utils import np_to_triton_dtype

        request = []
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            tensor = self._grpc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        result = self._call(f"inference on model {model!r}", self.raw.infer, model, request,
                            client_timeout=self.timeout)
        return {out.name: result.as_numpy(out.name) for out in result.get_response().outputs}

    def statistics(self, model: str) -> dict[str, int]:
        """Counts from Triton's statistics endpoint: inferences, executions (batches formed), requests."""
        stats = self._call(f"statistics of model {model!r}", self.raw.get_inference_statistics, model)
        out = {"inference_count": 0, "execution_count": 0, "success_count": 0, "fail_count": 0}
        for ms in stats.model_stats:
            out["inference_count"] += ms.inference_count
            out["execution_count"] += ms.execution_count
            out["success_count"] += ms.inference_stats.success.count
            out["fail_count"] += ms.inference_stats.fail.count
        return out


def infer(url: str, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one request of ``inputs`` (name -> array, batch first) on ``model`` at gRPC ``url``."""
    with Client(url) as client:
        return client.infer(model, inputs)


def model_statistics(url: str, model: str) -> dict[str, int]:
    with Client(url) as client:
        return client.statistics(model)


def evaluate_served(url: str, model: str, workload: Any, batch_size: int = 64,
                    progress: bool = False, keep_outputs: bool = False) -> dict[str, Any]:
    """Score ``workload.test_set()`` served by ``model`` at ``url``: the workload's metrics plus counts
    (and, with ``keep_outputs``, the served outputs themselves under ``"outputs"``, for parity checks).

    Batches are clamped to the model's ``max_batch_size``. The first of ``workload.output_names`` is
    scored (see docs/internals.md, Workload).
    """
    inputs, targets = workload.test_set()
    names = tuple(getattr(workload, "input_names", ())) or tuple(inputs)
    output_name = tuple(workload.output_names)[0]
    n = len(targets)
    with Client(url) as client:
        max_batch = int(client.config(model).max_batch_size)
        if max_batch > 0:
            batch_size = min(batch_size, max_batch)
        elif batch_size != n:
            batch_size = n  # an unbatched model takes the whole set as one tensor
        chunks = []
        starts = range(0, n, batch_size)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, desc=f"evaluate {model}", unit="sample", leave=False)
        t0 = time.perf_counter()
        for start in starts:
            batch = {name: inputs[name][start:start + batch_size] for name in names}
            out = client.infer(model, batch)
            if output_name not in out:
                raise InferError(f"model {model!r} returned {sorted(out)}, not the workload's output "
                                 f"{output_name!r}; the model and workload {workload.name!r} do not match")
            chunks.append(out[output_name])
            if bar is not None:
                bar.update(len(out[output_name]))
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    outputs = np.concatenate(chunks) if chunks else np.zeros((0,))
    result: dict[str, Any] = dict(workload.score(outputs, targets))
    result.update({"model": model, "url": url, "workload": getattr(workload, "name", "?"), "count": n,
                   "batches": len(starts), "batch_size": batch_size, "seconds": round(seconds, 4)})
    if keep_outputs:
        result["outputs"] = outputs
    return result
