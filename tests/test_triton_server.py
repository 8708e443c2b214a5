"""The bundled Triton serving FP32 and INT8 models over gRPC: real server, real client, real ORT."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from quantplug.errors import ServerError
from quantplug.triton.client import Client, InferError, evaluate_served, infer
from quantplug.triton.repository import add_model
from quantplug.triton.server import TritonServer

from .test_triton_repository import tiny_onnx
from .triton_models import DigitsWorkload, build_models, ort_run


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (the server and python-backend stubs name the repository)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return [p for p in pids if p != os.getpid()]


@pytest.fixture(scope="module")
def workload() -> DigitsWorkload:
    return DigitsWorkload()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, workload: DigitsWorkload) -> tuple[Path, Path]:
    return build_models(tmp_path_factory.mktemp("quantized"), workload)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models: tuple[Path, Path]) -> Iterator[TritonServer]:
    """One server for the module: cnn_fp32, cnn_int8 and a broken model that must not take them down."""
    fp32, int8 = models
    repo = tmp_path_factory.mktemp("repo")
    add_model(repo, "cnn_fp32", fp32, max_batch_size=32, max_queue_delay_us=20000)
    add_model(repo, "cnn_int8", int8, max_batch_size=32)
    broken = add_model(repo, "broken", fp32)
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    add_model(repo, "dyn", tiny_onnx(repo.parent / "dyn.onnx", dynamic_features=True), max_queue_delay_us=50000)
    server = TritonServer(repo, require_all=False)
    with server:
        yield server
    assert processes_mentioning(str(repo)) == []


@pytest.mark.parametrize("name", ["cnn_fp32", "cnn_int8"])
def test_served_outputs_match_onnxruntime_in_process(served: TritonServer, models, workload, name: str) -> None:
    onnx_path = models[0] if name == "cnn_fp32" else models[1]
    x = workload.test[0][:13]
    served_out = infer(served.grpc_url, name, {"image": x})["logits"]
    np.testing.assert_allclose(served_out, ort_run(onnx_path, {"image": x}), rtol=1e-5, atol=1e-5)


def test_served_accuracy_equals_in_process(served: TritonServer, models, workload) -> None:
    inputs, labels = workload.test_set()
    for name, onnx_path in (("cnn_fp32", models[0]), ("cnn_int8", models[1])):
        result = evaluate_served(served.grpc_url, name, workload, batch_size=64)
        in_process = workload.score(ort_run(onnx_path, inputs), labels)["accuracy"]
        assert result["accuracy"] == pytest.approx(in_process, abs=1e-9)
        assert result["count"] == len(labels) and result["batch_size"] == 32  # clamped to max_batch_size
        assert result["accuracy"] > 85.0


def test_dynamic_batching_forms_batches(served: TritonServer, workload) -> None:
    with Client(served.grpc_url) as client:
        before = client.statistics("cnn_fp32")
        x = workload.test[0][:1]
        barrier = threading.Barrier(16)
        errors: list[BaseException] = []

        def one() -> None:
            try:
                with Client(served.grpc_url) as c:
                    barrier.wait()
                    c.infer("cnn_fp32", {"image": x})
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        after = client.statistics("cnn_fp32")
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 16
    assert executions < inferences, f"{executions} executions for {inferences} inferences: no batch formed"


BAD_REQUESTS = {
    "wrong dtype": ("cnn_int8", {"image": np.zeros((2, 1, 8, 8), np.float64)}, "FP64"),
    "wrong shape": ("cnn_int8", {"image": np.zeros((2, 1, 9, 8), np.float32)}, "shape"),
    "batch above max_batch_size": ("cnn_int8", {"image": np.zeros((33, 1, 8, 8), np.float32)}, "batch"),
    "missing input": ("cnn_int8", {}, "input"),
    "unknown model": ("no_such_model", {"image": np.zeros((1, 1, 8, 8), np.float32)}, "no_such_model"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_an_error_and_server_keeps_serving(served: TritonServer, workload, case: str) -> None:
    model, inputs, hint = BAD_REQUESTS[case]
    with pytest.raises(InferError) as info:
        infer(served.grpc_url, model, inputs)
    assert hint.lower() in str(info.value).lower()
    assert served.is_running()
    out = infer(served.grpc_url, "cnn_int8", {"image": workload.test[0][:2]})
    assert out["logits"].shape == (2, 10)


def test_broken_model_is_reported_and_others_serve(served: TritonServer) -> None:
    assert sorted(served.failed_models) == ["broken"]
    line = served.failed_models["broken"]
    assert line.startswith("E") and "'broken'" in line  # the server's own error line
    assert served.ready_models() == ["cnn_fp32", "cnn_int8", "dyn"]
    states = served.model_states()
    assert states["broken"]["state"] == "UNAVAILABLE" and states["cnn_int8"]["state"] == "READY"


def test_model_control_is_closed(served: TritonServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(served.grpc_url)
    with pytest.raises(InferenceServerException, match="not allowed|polling|none"):
        client.unload_model("cnn_int8")
    assert client.is_model_ready("cnn_int8")


def test_require_all_fails_with_server_line_and_leaves_nothing(tmp_path: Path, models) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "good", models[1])
    broken = add_model(repo, "broken", models[0])
    (broken / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ServerError, match=r"1 of 2 models failed to load: broken: E\d+.*'broken'"):
        TritonServer(repo).start()
    assert processes_mentioning(str(repo)) == []


def test_stop_on_sigterm_leaves_no_process(tmp_path: Path, models) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "cnn", models[1], instance_count=2)
    server = TritonServer(repo).start()
    pid = server.process.pid if server.process else -1
    assert len(processes_mentioning(str(repo))) >= 3  # the server and two python-backend stubs
    server.stop()
    server.stop()  # idempotent
    assert processes_mentioning(str(repo)) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_port_in_use_is_one_clear_error(tmp_path: Path, models) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "cnn", models[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is in use.*--grpc-port"):
            TritonServer(repo, grpc_port=port).start()


def test_missing_binary_and_not_a_repository(tmp_path: Path, models) -> None:
    repo = tmp_path / "repo"
    add_model(repo, "cnn", models[1])
    with pytest.raises(ServerError, match="binary is missing.*nvidia-pytriton"):
        TritonServer(repo, binary=tmp_path / "nope" / "tritonserver").start()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServerError, match="not a Triton model repository"):
        TritonServer(tmp_path / "empty").start()
    with pytest.raises(ServerError, match="is not a folder"):
        TritonServer(tmp_path / "absent").start()


def test_no_server_at_url_is_one_clear_error(workload) -> None:
    from quantplug.triton.server import free_port

    with pytest.raises(ServerError, match="no Triton server answers"):
        infer(f"127.0.0.1:{free_port()}", "cnn", {"image": workload.test[0][:1]})


def test_model_error_goes_to_its_request_only(served: TritonServer) -> None:
    """Requests reaching ONNX Runtime with an impossible shape get their own error; batched-in neighbours
    (same dynamic batch, 50 ms queue delay) still get their results, and the model stays up."""
    good, bad = np.ones((1, 4), np.float32), np.ones((1, 5), np.float32)
    results: dict[int, object] = {}

    def send(i: int, x: np.ndarray) -> None:
        try:
            results[i] = infer(served.grpc_url, "dyn", {"x": x})["y"]
        except InferError as e:
            results[i] = e

    threads = [threading.Thread(target=send, args=(i, bad if i == 1 else good)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(results[1], InferError) and "MatMul" in str(results[1])
    for i in (0, 2, 3):
        np.testing.assert_allclose(results[i], np.full((1, 3), 4.0, np.float32))
    np.testing.assert_allclose(infer(served.grpc_url, "dyn", {"x": good})["y"], np.full((1, 3), 4.0))
