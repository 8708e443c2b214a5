"""The openvino backend through real OpenVINO and the real bundled Triton (skipped without openvino)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed (pip install ./plugins/quantplug-openvino)")
quantplug_openvino = pytest.importorskip("quantplug_openvino", reason="quantplug-openvino is not installed")

from quantplug.errors import ConfigError  # noqa: E402


def _pm() -> Any:
    """Built-ins plus this plugin, registered explicitly (whatever QUANTPLUG_LOAD_PLUGINS says)."""
    from quantplug.plugins import get_plugin_manager

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(quantplug_openvino, name="openvino")
    return pm


def _digits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.7 * len(y))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


class Models:
    def __init__(self, root: Path) -> None:
        import torch

        from quantplug import QuantRecipe, build_registry, quantize
        from quantplug.export import export_fp32, export_qdq

        (x, y), (self.x_test, self.y_test) = _digits()
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10))
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(6):
            for i in range(0, len(yt), 64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[i:i + 64]), yt[i:i + 64]).backward()
                opt.step()
        net.eval()
        self.registry = build_registry(_pm())
        recipe = QuantRecipe(method="ptq", calibrator="max", target="openvino", calib_batches=50)
        self.qmodel = quantize(net, recipe, [xt[i:i + 10] for i in range(0, 500, 10)], registry=self.registry,
                               progress=False)
        example = (xt[:1],)
        self.fp32 = export_fp32(net, example, root / "model_fp32.onnx", ("image",), ("logits",))
        self.int8 = export_qdq(self.qmodel, example, root / "model.onnx", target="openvino", input_names=["image"],
                               output_names=["logits"], registry=self.registry)
        with torch.no_grad():
            self.fake_quant = self.qmodel(torch.from_numpy(self.x_test)).numpy()
        recipe.save(root / "recipe.json")


def tolerance(reference: np.ndarray) -> float:
    """Two steps of an 8-bit output quantizer over the reference's range: an integer runtime may round a
    requantized value the other way (one step) where the float model sits on a half step."""
    return 2 * float(reference.max() - reference.min()) / 255


def tiny_dynamic_onnx(path: Path) -> Path:
    """y = Relu(x @ ones(4, 3)) with x [batch, f]: a request with f != 4 reaches OpenVINO and fails there."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "f"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("ov-models"))


def test_scheme_is_the_measured_one(models: Models) -> None:
    scheme = models.registry.backend("openvino").scheme
    assert (scheme.activation_dtype, scheme.activation_symmetric, scheme.weight_per_channel) == ("uint8", False, True)
    assert models.registry.plugin_of("backends", "openvino") == "openvino"
    with pytest.raises(ConfigError, match="INT4"):
        from quantplug import QuantRecipe, quantize

        quantize(models.qmodel, QuantRecipe(target="openvino", weight_bits=4), [], registry=models.registry)


def test_openvino_runs_the_qdq_file_like_the_fake_quant_model(models: Models) -> None:
    from quantplug_openvino.runtime import OpenVinoSession

    out = OpenVinoSession(models.int8, threads=2).run(None, {"image": models.x_test})[0]
    diff = float(np.abs(out - models.fake_quant).max())
    assert diff <= tolerance(models.fake_quant), f"OpenVINO differs from the fake-quant model by {diff}"
    agree = float(np.mean(out.argmax(1) == models.fake_quant.argmax(1)))
    assert agree >= 0.99
    assert float(np.mean(out.argmax(1) == models.y_test)) > 0.85


def test_embedded_and_container_files_and_config(models: Models, tmp_path: Path) -> None:
    from quantplug.triton.config import load_config
    from quantplug.triton.repository import add_model, check_repository

    repo = tmp_path / "repo"
    add_model(repo, "emb", models.int8, backend="openvino", threads=2, max_batch_size=16, pm=_pm())
    add_model(repo, "prod", models.int8, backend="openvino", flavour="container", threads=2, pm=_pm())
    files = {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}
    assert files == {"emb/config.pbtxt", "emb/1/model.onnx", "emb/1/model.py",
                     "prod/config.pbtxt", "prod/1/model.onnx"}
    emb, prod = load_config(repo / "emb" / "config.pbtxt"), load_config(repo / "prod" / "config.pbtxt")
    assert emb.backend == "python" and emb.max_batch_size == 16
    assert {k: emb.parameters[k].string_value for k in ("onnx_file", "inference_num_threads",
                                                         "inference_precision")} == {
        "onnx_file": "model.onnx", "inference_num_threads": "2", "inference_precision": "f32"}
    assert (prod.backend, prod.platform, prod.default_model_filename) == ("openvino", "", "model.onnx")
    assert {k: prod.parameters[k].string_value for k in ("NUM_STREAMS", "PERFORMANCE_HINT",
                                                          "INFERENCE_NUM_THREADS")} == {
        "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "2"}
    assert [g.kind for g in prod.instance_group] == [g.kind for g in emb.instance_group] == [2]  # KIND_CPU
    assert check_repository(repo) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "KIND_GPU"}, "KIND_CPU"),
    ({"flavour": "plan"}, "valid: embedded, container"),
    ({"options": {"precision": "f8"}}, "precision"),
    ({"options": {"accelerator": "tensorrt"}}, "accelerator"),
])
def test_bad_settings_are_one_clear_error(models: Models, tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    from quantplug.triton.repository import add_model

    with pytest.raises(ConfigError, match=match):
        add_model(tmp_path / "repo", "m", models.int8, backend="openvino", pm=_pm(), **kwargs)
    assert not (tmp_path / "repo" / "m").exists()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models: Models) -> Iterator[Any]:
    from quantplug.triton.repository import add_model
    from quantplug.triton.server import TritonServer

    repo = tmp_path_factory.mktemp("ov-repo")
    add_model(repo, "cnn_int8", models.int8, backend="openvino", max_batch_size=32, max_queue_delay_us=20000,
              pm=_pm())
    add_model(repo, "dyn", tiny_dynamic_onnx(repo.parent / "dyn.onnx"), backend="openvino",
              max_queue_delay_us=50000, pm=_pm())
    with TritonServer(repo) as server:
        yield server


def test_served_outputs_equal_the_fake_quant_model(served: Any, models: Models) -> None:
    from quantplug_openvino.runtime import OpenVinoSession

    from quantplug.triton.client import infer

    x = models.x_test[:32]
    out = infer(served.grpc_url, "cnn_int8", {"image": x})["logits"]
    in_process = OpenVinoSession(models.int8, threads=1).run(None, {"image": x})[0]
    np.testing.assert_allclose(out, in_process, rtol=1e-5, atol=1e-5)
    diff = float(np.abs(out - models.fake_quant[:32]).max())
    assert diff <= tolerance(models.fake_quant), f"served OpenVINO differs from the fake-quant model by {diff}"


def test_dynamic_batching_joins_requests_into_one_run(served: Any, models: Models) -> None:
    from quantplug.triton.client import Client

    x = models.x_test[:1]
    with Client(served.grpc_url) as client:
        before = client.statistics("cnn_int8")
        barrier = threading.Barrier(12)
        results: dict[int, Any] = {}

        def one(i: int) -> None:
            try:
                with Client(served.grpc_url) as c:
                    barrier.wait()
                    results[i] = c.infer("cnn_int8", {"image": x})["logits"]
            except BaseException as e:  # noqa: BLE001 - checked below
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        after = client.statistics("cnn_int8")
    assert all(isinstance(r, np.ndarray) for r in results.values()) and len(results) == 12
    for r in results.values():
        np.testing.assert_allclose(r, results[0], rtol=1e-5, atol=1e-5)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 12 and executions < inferences, f"{executions} runs for {inferences}: no batch formed"


def test_a_bad_request_gets_its_own_error_and_neighbours_their_results(served: Any) -> None:
    from quantplug.triton.client import InferError, infer

    good, bad = np.ones((1, 4), np.float32), np.ones((1, 5), np.float32)
    results: dict[int, Any] = {}

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
    assert isinstance(results[1], InferError), results[1]
    for i in (0, 2, 3):
        np.testing.assert_allclose(results[i], np.full((1, 3), 4.0, np.float32))
    assert served.is_running()


def _installed() -> bool:
    try:
        metadata.distribution("quantplug-openvino")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed(), reason="quantplug-openvino is not pip-installed (make install)")
def test_quantplug_plugins_lists_the_distribution(models: Models, tmp_path: Path) -> None:
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "QUANTPLUG_LOAD_PLUGINS"}
    run = subprocess.run([sys.executable, "-m", "quantplug", "plugins"], capture_output=True, text=True,
                         env=env_free, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "openvino  (quantplug-openvino" in run.stdout and "backends: openvino" in run.stdout
    # The CLI path users take: repo add --backend openvino from a quantize output folder.
    src = models.int8.parent
    add = subprocess.run([sys.executable, "-m", "quantplug", "repo", "add", "--from", str(src), "--name", "cnn",
                          "--repository", str(tmp_path / "repo"), "--backend", "openvino"],
                         capture_output=True, text=True, env=env_free, timeout=120)
    assert add.returncode == 0, add.stderr
    assert (tmp_path / "repo" / "cnn_int8" / "1" / "model.py").read_text().count("import openvino") == 1


class _BenchWorkload:
    """The parts of the Workload contract ``quantplug bench`` uses, over the digits split."""

    name, metric, input_names, output_names = "ov-digits", "accuracy", ("image",), ("logits",)

    def __init__(self, models: Models) -> None:
        self.models = models
        (self.x_train, _), _ = _digits()

    def calibration_batches(self, batch_size: int, seed: int = 0) -> Iterator[Any]:
        import torch

        for i in range(0, len(self.x_train), batch_size):
            yield torch.from_numpy(self.x_train[i:i + batch_size])

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {"image": self.models.x_test}, self.models.y_test

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"accuracy": float(100.0 * np.mean(outputs.argmax(axis=1) == targets))}


def test_bench_rows_openvino_beside_onnxruntime(models: Models, tmp_path: Path) -> None:
    """FP32, quantplug INT8 and NNCF INT8 on OpenVINO, alternated with ONNX Runtime's, through the plugin's
    backend only (the core never imports openvino); the bench.md section lists every row."""
    from types import SimpleNamespace

    from quantplug.bench import BenchConfig
    from quantplug.bench.report import _runtimes_section
    from quantplug.bench.runtimes import bench_runtimes

    cfg = BenchConfig.quick_config(output=tmp_path, threads=1, calib_batches=8, test_limit=100)
    built = SimpleNamespace(paths={"fp32": models.fp32, "int8": models.int8},
                            details={"int8": {"quantize_seconds": 1.5}})
    steps: list[str] = []
    out = bench_runtimes(cfg, _BenchWorkload(models), models.registry, built, tmp_path / "models", step=steps.append)
    assert list(out) == ["openvino"] and steps == ["runtime openvino: FP32, INT8, peer"]
    ov = out["openvino"]
    keys = {"onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_int8", "openvino_peer"}
    assert set(ov["models"]) == keys and ov["scheme_exact_here"] is True
    peer = ov["models"]["openvino_peer"]
    assert peer["tool"] == "nncf.quantize" and Path(peer["path"]).name == "model.xml" and peer["quantize_seconds"] > 0
    assert "the same 8 batches of 2" in peer["calibration"]
    inp = ov["in_process"]
    assert set(inp["medians_ms"]) == keys and all(len(v) == cfg.rounds for v in inp["rounds_ms"].values())
    assert inp["speedup_vs_onnxruntime_fp32"]["onnxruntime_fp32"] == 1.0
    assert set(inp["speedup_vs_peer"]) == {"onnxruntime_int8", "openvino_int8"}
    assert inp["fastest_fp32"] in ("onnxruntime_fp32", "openvino_fp32")
    scores = ov["quality"]["scores"]
    assert set(scores) == keys and all(s["accuracy"] > 85 for s in scores.values())
    # The same QDQ file scores the same in both runtimes (both exact on this CPU's scheme).
    assert abs(scores["openvino_int8"]["accuracy"] - scores["onnxruntime_int8"]["accuracy"]) <= 1.0
    text = "\n".join(_runtimes_section({"workloads": {"ov-digits": {"runtimes": out}}}, cfg.batch))
    for label in ("ONNX Runtime FP32", "quantplug INT8 on openvino", "nncf.quantize INT8 on openvino", "fastest INT8"):
        assert label in text
