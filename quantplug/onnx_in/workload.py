"""An ONNX file + its data as a workload, and ``quantize_onnx`` (the one-call API)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..user import UserWorkload
from .load import OnnxModel, load_onnx

__all__ = ["OnnxWorkload", "quantize_onnx"]


class OnnxWorkload(UserWorkload):
    """``--onnx FILE --data ...``: the converted graph is the FP32 model; the data follows ``--data`` rules.

    ``data``: an ``.npz`` whose arrays are named like the graph's inputs (optional ``labels``), any other
    data file :func:`quantplug.data.load_data_file` reads, or a ``package.module:make_data`` factory. The
    file is read and converted here, so a file that cannot convert fails before any calibration. Without
    labels the scores are fidelity to the FP32 graph, and QAD (distillation from it) is the training method.
    """

    def __init__(self, onnx_path: str | os.PathLike[str], data_spec: str | None, *, data_options: Any = None,
                 check: bool = True) -> None:
        self.onnx: OnnxModel = load_onnx(onnx_path, check=check)
        p = Path(onnx_path)
        self.name = f"onnx:{p.name}"
        self.description = f"ONNX model {p} (opset {self.onnx.converted.opset})"
        self._hf = None
        self._factory = None
        self._hf_output = "auto"
        self._weights = None
        self._model = None
        self._reference = None
        self._export_checked = True  # conversion already ran the graph against ONNX Runtime
        if data_spec is None:
            raise ConfigError("--onnx needs --data: an .npz of the graph's inputs "
                              f"({', '.join(self.onnx.input_names)}), a folder of images, a text file, or "
                              "package.module:make_data")
        self.data = self._load_data(data_spec, data_options)
        if not callable(getattr(self.data, "calibration_batches", None)):
            raise ConfigError(f"data factory {data_spec!r} returned {type(self.data).__name__}, which has no "
                              "calibration_batches(batch_size, seed) method (see quantplug.user)")
        names = tuple(getattr(self.data, "input_names", self.onnx.input_names))
        if set(names) != set(self.onnx.input_names) and len(names) != len(self.onnx.input_names):
            raise ConfigError(f"data {data_spec} has inputs {list(names)}, the ONNX graph takes "
                              f"{list(self.onnx.input_names)}; name the arrays like the graph's inputs")
        self.input_names = self.onnx.input_names
        self.output_names = self.onnx.output_names
        self.has_labels = bool(getattr(self.data, "has_labels", True))
        self.metric = getattr(self.data, "metric", "accuracy")
        self.train_lr = float(getattr(self.data, "train_lr", 1e-3))
        self.class_axis = int(getattr(self.data, "class_axis", 1))

    def _load_data(self, data_spec: str, data_options: Any) -> Any:
        from ..data import FileOptions, is_data_file, load_data_file

        if is_data_file(data_spec):
            return load_data_file(data_spec, inputs=list(self.onnx.input_names), options=data_options or FileOptions())
        return super()._load_data(data_spec, data_options)

    def build_model(self, seed: int = 0, progress: bool = True) -> Any:
        model = self.onnx.fresh_module()
        if self._model is None:
            self._model = model
        return model


def quantize_onnx(onnx_path: str | os.PathLike[str], data: str, output_dir: str | os.PathLike[str],
                  recipe: Any = None, *, data_options: Any = None, progress: bool = False, **changes: Any) -> Any:
    """Quantize an ONNX file into ``output_dir`` (model.onnx, model_fp32.onnx, recipe.json, metrics.json).

    ``data``: as ``--data`` (an ``.npz`` of the graph's inputs, optionally ``labels``; an image folder; a
    text file; or ``package.module:make_data``). ``recipe``: a :class:`quantplug.QuantRecipe` (default one),
    updated with ``changes`` (e.g. ``method="qad"``, ``weight_bits=4``). Returns the
    :class:`quantplug.pipeline.QuantizeResult`.
    """
    from ..pipeline import quantize_to_dir
    from ..recipe import QuantRecipe

    recipe = (recipe or QuantRecipe()).replace(**changes) if changes else (recipe or QuantRecipe())
    source = OnnxWorkload(onnx_path, data, data_options=data_options)
    return quantize_to_dir(source, recipe, output_dir, progress=progress)
