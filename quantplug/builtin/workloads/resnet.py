"""``resnet18`` and ``resnet50``: 224x224 ImageNet-shaped ResNets for speed measurements.

There is no ImageNet here, so these are *fidelity* workloads on synthetic data:

- the network is randomly initialised with a fixed seed (He init), then its BatchNorm statistics are
  estimated on synthetic images (so every layer sees well-scaled activations, as in a trained net) and
  the classifier's bias is set to centre its logits on those images (so predictions vary by image);
- images are smooth random images in ImageNet-normalised units: 28x28 Gaussian noise upsampled
  bilinearly to 224x224, plus fine Gaussian noise of std 0.25, one independent stream per purpose
  (calibration/training vs held-out test), so the test images are never calibrated on;
- targets are the FP32 model's own top-1 class (seed 0) on the 128 test images, so
  ``score(...)["accuracy"]`` is top-1 *agreement* with FP32 in percent (fidelity, not ImageNet accuracy).

No labels exist (``has_labels = False``): QAT's label loss is unavailable, QAD (distillation) works.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import numpy as np

from quantplug.cache import cache_dir
from quantplug.errors import ConfigError

from ._base import accuracy_score, load_cached, weights_path
from ._data import atomic_write_bytes, save_npz

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ResNet18Workload", "ResNet50Workload", "SyntheticImageNetWorkload", "synthetic_images"]

_STREAM_TRAIN, _STREAM_TEST = 1, 2


def synthetic_images(stream: int, seed: int, index: int, n: int, size: int = 224) -> torch.Tensor:
    """``n`` smooth random images ``(n, 3, size, size)``, a pure function of (stream, seed, index)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([stream, seed, index])))
    coarse = torch.from_numpy(rng.standard_normal((n, 3, size // 8, size // 8), dtype=np.float32))
    fine = torch.from_numpy(rng.standard_normal((n, 3, size, size), dtype=np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) + 0.25 * fine


class SyntheticImageNetWorkload:
    """A randomly initialised 224x224 classifier measured by top-1 agreement with its FP32 self."""

    name: str = ""
    description: str = ""
    metric: str = "accuracy"
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)
    has_labels: bool = False
    train_lr: float = 1e-3  # nominal (the net is not trained); QAD fine-tunes at lr_scale of this
    image_size: int = 224
    n_train: int = 1024  # images in one "pass" of calibration_batches / train_batches
    n_test: int = 128
    bn_batches: int = 4  # batches of 16 synthetic images used to estimate BatchNorm statistics
    version: str = "v2"
    arch: str = ""

    def __init__(self) -> None:
        self._test: tuple[dict[str, np.ndarray], np.ndarray] | None = None

    def _make_model(self) -> nn.Module:
        from . import models

        factory = getattr(models, self.arch)
        return factory()  # type: ignore[no-any-return]

    def build_model(self, seed: int = 0, progress: bool = True) -> nn.Module:
        """The FP32 model in eval mode: He init from ``seed``, BatchNorm statistics from synthetic images."""
        import torch
        from tqdm.auto import tqdm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._make_model()
        path = weights_path(self.name, self.version, seed)
        if path.is_file() and load_cached(model, path):
            return model.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over all batches
        fc = cast("torch.nn.Linear", model.fc)
        pooled: list[torch.Tensor] = []
        hook = fc.register_forward_pre_hook(lambda _m, args: pooled.append(args[0].detach()))
        model.train()
        with torch.no_grad():
            for i in tqdm(range(self.bn_batches), desc=f"{self.name}: BatchNorm statistics", disable=not progress,
                          leave=False):  # fmt: skip
                model(synthetic_images(_STREAM_TRAIN, 10_000 + seed, i, 16, self.image_size))
            hook.remove()
            # Centre the classifier on the synthetic data (bias = -W @ mean feature), so the predicted
            # class depends on each image rather than on the mean feature every image shares.
            fc.bias.copy_(-fc.weight @ torch.cat(pooled).mean(dim=0))
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())
        return model.eval()

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return (synthetic_images(_STREAM_TRAIN, 0, 0, batch_size, self.image_size),)

    def calibration_batches(
        self, batch_size: int, seed: int = 0, num_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Synthetic training-stream images; ``num_batches=None`` is one pass of ``n_train`` images."""
        count = num_batches if num_batches is not None else max(1, self.n_train // batch_size)
        for i in range(count):
            yield (synthetic_images(_STREAM_TRAIN, seed, i, batch_size, self.image_size),)

    def train_batches(
        self, batch_size: int, seed: int = 0
    ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]:
        """One pass of unlabeled synthetic images: ``((inputs,), None)``."""
        for (x,) in self.calibration_batches(batch_size, seed=seed + 1_000_000):
            yield (x,), None

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise ConfigError(
            f"workload {self.name} has no labels (synthetic images), so it has no task loss; "
            "use --method ptq or qad (distillation from the FP32 model)"
        )

    def test_set(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """128 held-out synthetic images and the FP32 (seed 0) model's top-1 class for each (cached)."""
        if self._test is None:
            import torch

            x = synthetic_images(_STREAM_TEST, 0, 0, self.n_test, self.image_size).numpy()
            path = cache_dir("workloads") / f"{self.name}-{self.version}-targets.npz"
            if path.is_file():
                targets = np.load(path)["targets"]
            else:
                model = self.build_model(seed=0, progress=False)
                with torch.no_grad():
                    logits = np.concatenate([model(torch.from_numpy(x[i : i + 16])).numpy()
                                             for i in range(0, len(x), 16)])  # fmt: skip
                targets = logits.argmax(axis=1).astype(np.int64)
                save_npz(path, targets=targets)
            self._test = ({self.input_names[0]: x}, targets)
        return self._test

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """``accuracy``: top-1 agreement with the FP32 model in percent; ``top5_agreement``: percent of
        images whose FP32 class is among the 5 largest outputs (1,000 near-random classes have close
        runners-up, so this shows whether a disagreement is a near tie)."""
        scores = accuracy_score(outputs, targets)
        top5 = np.argsort(-np.asarray(outputs), axis=1)[:, :5]
        scores["top5_agreement"] = float(np.mean(np.any(top5 == np.asarray(targets).reshape(-1, 1), axis=1)) * 100)
        return scores


_DESCRIPTION = (
    "{arch} (224x224, ImageNet-shaped, {params} parameters), random init with a fixed seed and BatchNorm "
    "statistics from synthetic images; calibration and test data are synthetic random images (for speed "
    "measurements); metric: top-1 agreement % with the FP32 model's own prediction (fidelity)"
)


class ResNet18Workload(SyntheticImageNetWorkload):
    name = "resnet18"
    arch = "resnet18"
    description = _DESCRIPTION.format(arch="ResNet-18", params="11.7M")


class ResNet50Workload(SyntheticImageNetWorkload):
    name = "resnet50"
    arch = "resnet50"
    description = _DESCRIPTION.format(arch="ResNet-50", params="25.6M")
