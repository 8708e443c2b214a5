"""Parity on the CPU the tests run on: fake-quant PyTorch vs the QDQ reference vs ONNX Runtime vs Triton.

What holds depends on the CPU (quantplug.cpu reads /proc/cpuinfo): the 7-bit-weight scheme (``cpu="avx2"``)
must reproduce the fake-quant model everywhere; the full-range scheme (``cpu="vnni"``) only where the
integer kernels do not saturate. Each test asserts what holds for the CPU it runs on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from quantplug import QuantRecipe, quantize
from quantplug.cpu import detect_cpu, isa_from_flags, saturates
from quantplug.export import export_qdq
from quantplug.export.metadata import cpu_mismatch, read_metadata
from quantplug.parity import SAME_MODEL_TOLERANCE, check_parity, compare, compare_served
from quantplug.quant.prepare import weight_layers

from .triton_models import DigitsWorkload

ROOT = Path(__file__).resolve().parents[1]
SATURATES_HERE = detect_cpu().saturates


def _registry():
    from quantplug.plugins import get_plugin_manager
    from quantplug.registry import build_registry

    return build_registry(get_plugin_manager(load_entrypoints=False))  # built-ins only


@pytest.fixture(scope="module")
def digits() -> tuple[DigitsWorkload, torch.nn.Module]:
    wl = DigitsWorkload()
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 10),
    )
    x, y = (torch.from_numpy(a) for a in wl.train)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _epoch in range(6):
        for i in range(0, len(y), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return wl, net.eval()


def _fp32(net: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(inputs["image"])).numpy()


def _quantized(net: torch.nn.Module, wl: DigitsWorkload, cpu: str, path: Path) -> tuple[torch.nn.Module, Path]:
    x = torch.from_numpy(wl.train[0])
    qmodel = quantize(net, QuantRecipe(calib_batches=50, cpu=cpu), [x[i:i + 16] for i in range(0, 800, 16)],
                      progress=False, registry=_registry())
    export_qdq(qmodel, (x[:1],), path, input_names=["image"], output_names=["logits"], registry=_registry())
    return qmodel, path


def test_isa_classes_from_cpu_flags() -> None:
    assert isa_from_flags({"avx2", "fma"}) == "avx2"
    assert isa_from_flags({"avx2", "avx512f", "avx512bw"}) == "avx512"
    assert isa_from_flags({"avx2", "avx512bw", "avx512_vnni"}) == "vnni"
    assert isa_from_flags({"avx2", "avx_vnni"}) == "vnni"
    assert isa_from_flags({"avx512_vnni", "amx_int8"}) == "amx"
    assert isa_from_flags({"asimddp"}, "aarch64") == "arm"
    assert [saturates(i) for i in ("avx2", "avx512", "vnni", "amx", "arm")] == [True, True, False, False, False]
    flags = Path("/proc/cpuinfo").read_text()
    assert detect_cpu().saturates == (" avx512_vnni" not in flags and " avx_vnni" not in flags
                                      and " amx_int8" not in flags and " avx2" in flags)


def test_exact_scheme_reproduces_the_fake_quant_model_on_this_cpu(digits, tmp_path: Path) -> None:
    wl, net = digits
    qmodel, path = _quantized(net, wl, "avx2", tmp_path / "avx2.onnx")
    assert {m.weight_quant.quant_max for m in weight_layers(qmodel)} == {64}  # prepare obeyed the scheme: QAT would train this range
    assert read_metadata(path) == {"scheme": "onnxruntime", "cpu": "avx2", "weight_qmax": "64"}
    inputs, _ = wl.test_set()
    report = check_parity(qmodel, path, inputs, ("image",), fp32_out=_fp32(net, inputs))
    assert report.ok, report.message()
    a = report.torch_vs_runtime
    assert a is not None and a.top1 is not None and a.top1 >= 0.999 and a.mean_rel < 0.25
    assert report.first_divergence is None


def test_full_range_scheme_is_exact_only_with_vnni(digits, tmp_path: Path) -> None:
    wl, net = digits
    qmodel, path = _quantized(net, wl, "vnni", tmp_path / "vnni.onnx")
    assert {m.weight_quant.quant_max for m in weight_layers(qmodel)} == {127}
    inputs, _ = wl.test_set()
    report = check_parity(qmodel, path, inputs, ("image",), fp32_out=_fp32(net, inputs))
    if SATURATES_HERE:
        # Saturation shows as a divergence of the runtime from the QDQ arithmetic, localised to a layer.
        assert not report.ok and not report.reference_vs_runtime.within_tolerance
        assert report.first_divergence is not None and report.first_divergence.producer_op in ("Conv", "Gemm",
                                                                                              "MatMul")
        assert "--cpu avx2" in report.message()
    else:
        assert report.ok, report.message()


def test_resnet18_exact_scheme_on_this_cpu(tmp_path: Path) -> None:
    registry = _registry()
    wl = registry.workload("resnet18")
    model = wl.build_model(seed=0, progress=False)
    qmodel = quantize(model, QuantRecipe(calib_batches=4, calib_batch_size=8, cpu="avx2"),
                      wl.calibration_batches(8, num_batches=4), progress=False, registry=registry)
    path = export_qdq(qmodel, wl.example_inputs(1), tmp_path / "r18.onnx", input_names=list(wl.input_names),
                      output_names=list(wl.output_names), registry=registry)
    inputs, _ = wl.test_set()
    inputs = {k: v[:24] for k, v in inputs.items()}
    with torch.no_grad():
        fp32 = model(torch.from_numpy(inputs[wl.input_names[0]])).numpy()
    report = check_parity(qmodel, path, inputs, tuple(wl.input_names), localize_on_failure=False, fp32_out=fp32)
    assert report.ok, report.message()
    assert report.torch_vs_runtime is not None and report.torch_vs_runtime.cosine_worst > 0.99


def test_a_corrupted_scale_is_localised_to_its_layer(digits, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    wl, net = digits
    qmodel, path = _quantized(net, wl, "avx2", tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    act_q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    # The quantizer of the second conv's output (after its ReLU): its layer is that conv.
    target = next(n for n in act_q if n.input[0] in producers and producers[n.input[0]].op_type == "Relu"
                  and producers[producers[n.input[0]].input[0]].name.endswith("2/Conv"))
    old = numpy_helper.to_array(inits[target.input[1]])
    new_scale = numpy_helper.from_array((old * 1.6).astype(np.float32), f"{target.input[1]}_corrupt")
    proto.graph.initializer.append(new_scale)
    target.input[1] = new_scale.name  # only this Q node: the integers it writes change by 1/1.6
    bad = tmp_path / "corrupt.onnx"
    onnx.save(proto, str(bad))
    inputs, _ = wl.test_set()
    report = check_parity(qmodel, bad, inputs, ("image",), fp32_out=_fp32(net, inputs))
    assert not report.ok
    d = report.first_divergence
    assert d is not None and d.onnx_node == target.name and d.producer.endswith("2/Conv"), d
    assert "export problem" in report.message() and d.producer in report.message()


def test_cpu_mismatch_warning_follows_the_serving_cpu(digits, tmp_path: Path) -> None:
    from quantplug.triton.cpu_check import repository_cpu_warnings
    from quantplug.triton.repository import add_model

    assert cpu_mismatch("vnni", 127, "avx2") is not None and "--cpu avx2" in cpu_mismatch("vnni", 127, "avx2")
    assert cpu_mismatch("vnni", 127, "amx") is None and cpu_mismatch("avx2", 64, "avx2") is None
    wl, net = digits
    _, path = _quantized(net, wl, "vnni", tmp_path / "vnni.onnx")
    repo = tmp_path / "repo"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_model(repo, "m_int8", path)
    text = (repo / "m_int8" / "config.pbtxt").read_text()
    assert 'key: "quantplug_cpu"' in text and 'string_value: "vnni"' in text
    mine = [str(w.message) for w in caught if "made for a vnni CPU" in str(w.message)]
    assert len(mine) == (1 if SATURATES_HERE else 0)
    assert len(repository_cpu_warnings(repo)) == (1 if SATURATES_HERE else 0)


def test_compare_reports_agreement_and_tolerance() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(100, 10)).astype(np.float32)
    a = compare(ref, ref + 1e-4)
    assert a.within_tolerance and a.top1 == 1.0 and a.max_abs == pytest.approx(1e-4, rel=1e-2)
    b = compare(ref, ref + rng.normal(scale=0.2, size=ref.shape))
    assert not b.within_tolerance and b.mean_rel > SAME_MODEL_TOLERANCE["mean_rel"]
    assert not compare(ref, np.full_like(ref, np.nan)).within_tolerance


def test_served_model_matches_and_rejects_non_finite_inputs(digits, tmp_path: Path) -> None:
    from quantplug.triton.client import InferError, infer
    from quantplug.triton.repository import add_model
    from quantplug.triton.server import TritonServer

    wl, net = digits
    _, path = _quantized(net, wl, "avx2", tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    add_model(repo, "m_int8", path, max_batch_size=64)
    add_model(repo, "m_lenient", path, max_batch_size=64,
              extra={"parameters": {"reject_non_finite": {"string_value": "0"}}})
    inputs, _ = wl.test_set()
    np.savez(tmp_path / "heldout.npz", **inputs)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(path.read_bytes())
    with TritonServer(repo) as server:
        served = compare_served(server.grpc_url, "m_int8", path, inputs)
        assert served.within_tolerance and served.max_abs < 1e-5 and served.top1 == 1.0
        bad = inputs["image"][:4].copy()
        bad[1, 0, 3, 3] = np.nan
        bad[2, 0, 0, 0] = np.inf
        with pytest.raises(InferError, match=r"'image' has 2 NaN/Inf value\(s\)"):
            infer(server.grpc_url, "m_int8", {"image": bad})
        assert infer(server.grpc_url, "m_int8", {"image": inputs["image"][:4]})["logits"].shape == (4, 10)
        assert infer(server.grpc_url, "m_lenient", {"image": bad})["logits"].shape == (4, 10)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "QUANTPLUG_LOAD_PLUGINS": ""}
        proc = subprocess.run([sys.executable, "-m", "quantplug", "verify", str(folder), "--data",
                               str(tmp_path / "heldout.npz"), "--url", server.grpc_url, "--model", "m_int8",
                               "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["served_vs_runtime"]["within_tolerance"] is True
    assert result["runtime"]["reference_vs_runtime"]["within_tolerance"] is True
