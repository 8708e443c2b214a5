"""Hugging Face models from a local folder: ``--model hf:DIR``.

A folder written by ``save_pretrained`` (``config.json``, optional weights) is loaded offline through
the class its ``config.json`` names in ``architectures`` (so the task head comes with it; ``AutoModel``
when it names none), with eager attention (explicit matrix products, which quantization can see), and
wrapped in :class:`HFModule`: positional inputs become keyword arguments (``input_ids``,
``attention_mask``, ``pixel_values``, ...; these become the ONNX input names) and one output tensor is
returned, the one that matters:

- ``logits`` for a model with a task head;
- for a base model: the sentence embedding its sentence-transformers files describe (mean or CLS
  pooling, L2-normalised when ``modules.json`` lists ``Normalize``), else ``pooler_output`` for an image
  model, else ``last_hidden_state``;
- or what ``output`` names: ``logits``, ``last_hidden_state``, ``pooler_output``, ``mean`` (mean over the
  attention mask), ``mean-normalized``, ``cls`` (the first token), or any other output field.

The wrapper calls the model with keywords and returns a plain tensor, which is what lets the TorchScript
ONNX exporter export models of transformers 5 (a ``BertModel`` called positionally fails there with
"got multiple values for argument 'use_cache'"). ``transformers`` is imported only when a folder is
loaded.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ConfigError

__all__ = ["HF_OUTPUTS", "HFModule", "HFSpec", "inspect_folder", "is_hf_model", "load_model", "wrap_hf_model"]

HF_OUTPUTS = ("auto", "logits", "last_hidden_state", "pooler_output", "mean", "mean-normalized", "cls")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# Forward arguments that carry data (everything else, e.g. labels, return_dict, use_cache, is not an input).
DATA_ARGUMENTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "pixel_values", "pixel_mask",
                  "input_features", "input_values", "decoder_input_ids", "decoder_attention_mask")
# Heads whose logits put the classes on the last axis ((N, tokens, classes)); others use axis 1.
_LAST_AXIS_HEADS = ("ForTokenClassification", "ForMaskedLM", "ForCausalLM")


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _transformers() -> Any:
    _offline()
    try:
        import transformers
    except ImportError as e:
        raise ConfigError("--model hf:DIR needs transformers; pip install 'quantplug[hf]'") from e
    return transformers


@dataclass
class HFSpec:
    """What a model folder holds, read before any weights are loaded."""

    path: Path
    config: Any
    model_class: Any
    architecture: str
    has_weights: bool
    main_input: str
    inputs: tuple[str, ...]  # data arguments the forward takes, the main input first
    sentence_pooling: str | None = None  # "mean", "mean-normalized", "cls" from sentence-transformers files
    label2id: dict[str, int] = field(default_factory=dict)

    @property
    def has_head(self) -> bool:
        return not self.architecture.endswith("Model")

    @property
    def num_channels(self) -> int | None:
        n = getattr(self.config, "num_channels", None)
        return int(n) if isinstance(n, int) and n in (1, 3) else None

    @property
    def class_axis(self) -> int:
        return -1 if self.architecture.endswith(_LAST_AXIS_HEADS) else 1

    def resolve_output(self, output: str) -> str:
        """The output ``auto`` stands for in this folder (others are returned unchanged)."""
        if output != "auto":
            return output
        if self.has_head:
            return "logits"
        if self.sentence_pooling:
            return self.sentence_pooling
        if self.main_input == "pixel_values":
            return "pooler_output"
        return "last_hidden_state"


def _sentence_pooling(path: Path) -> str | None:
    modules = path / "modules.json"
    if not modules.is_file():
        return None
    try:
        entries = json.loads(modules.read_text())
        types = [str(m.get("type", "")) for m in entries]
        pool_dir = next((m.get("path", "") for m in entries if str(m.get("type", "")).endswith(".Pooling")), None)
        pool = json.loads((path / pool_dir / "config.json").read_text()) if pool_dir else {}
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if pool.get("pooling_mode_cls_token"):
        mode = "cls"
    elif pool.get("pooling_mode_mean_tokens", pool_dir is not None):
        mode = "mean"
    else:
        return None
    if mode == "mean" and any(t.endswith(".Normalize") for t in types):
        mode = "mean-normalized"
    return mode


def inspect_folder(path: str | os.PathLike[str]) -> HFSpec:
    """Read ``config.json`` of a Hugging Face model folder (offline); a one-line ConfigError when it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"hf:{p} is not a folder; pass the folder a Hugging Face model was saved to "
                          "(model.save_pretrained(DIR))")
    if not (p / "config.json").is_file():
        raise ConfigError(f"hf:{p} is not a Hugging Face model folder: it has no config.json; pass the folder "
                          "written by model.save_pretrained(DIR)")
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"hf:{p}: config.json does not load ({type(e).__name__}: {first}); write it with "
                          "model.save_pretrained or config.save_pretrained") from e
    names = list(getattr(config, "architectures", None) or [])
    if names:
        arch = names[0]
        cls = getattr(transformers, arch, None)
        if cls is None:
            raise ConfigError(f"hf:{p}: config.json names architecture {arch!r}, which transformers "
                              f"{transformers.__version__} does not have (custom-code models are not loaded); "
                              "save the model with a built-in architecture")
    else:
        cls = transformers.AutoModel._model_mapping.get(type(config), None)
        if cls is None:
            raise ConfigError(f"hf:{p}: config.json names no architectures and model type "
                              f"{getattr(config, 'model_type', '?')!r} has no base model class")
        arch = cls.__name__
    params = inspect.signature(cls.forward).parameters
    main = str(getattr(cls, "main_input_name", "input_ids"))
    inputs = tuple(dict.fromkeys([main, *(a for a in DATA_ARGUMENTS if a in params)]))
    has_weights = any((p / f).is_file() for f in WEIGHT_FILES)
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    if all(k.startswith("LABEL_") for k in label2id):
        label2id = {}
    return HFSpec(p, config, cls, arch, has_weights, main, inputs, _sentence_pooling(p), label2id)


def _load_weights(spec: HFSpec, seed: int, progress: bool = True) -> nn.Module:
    import torch

    torch.manual_seed(seed)
    if not progress:
        _transformers().utils.logging.disable_progress_bar()
    cls = spec.model_class
    try:
        if spec.has_weights:
            try:
                model = cls.from_pretrained(str(spec.path), local_files_only=True, attn_implementation="eager")
            except (ValueError, TypeError):  # a model without attention refuses the keyword
                model = cls.from_pretrained(str(spec.path), local_files_only=True)
        else:
            config = spec.config
            try:
                config._attn_implementation = "eager"
            except Exception:
                pass
            model = cls(config)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"hf:{spec.path}: {spec.architecture} does not load offline ({type(e).__name__}: "
                          f"{first[:300]}); the folder must hold a model saved with save_pretrained") from e
    return model.eval()


class HFModule(nn.Module):
    """A Hugging Face model called with keyword inputs, returning one tensor (see the module docstring)."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...] | list[str], output: str = "auto",
                 spec: HFSpec | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output = spec.resolve_output(output) if spec is not None else output
        params = inspect.signature(type(model).forward).parameters
        self._fixed: dict[str, Any] = {}
        if "return_dict" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            self._fixed["return_dict"] = True
        if "use_cache" in params:
            self._fixed["use_cache"] = False
        unknown = [n for n in self.input_names if n not in params
                   and not any(p.kind is p.VAR_KEYWORD for p in params.values())]
        if unknown:
            raise ConfigError(f"{type(model).__name__} takes no input {', '.join(unknown)} (it takes "
                              f"{', '.join(a for a in DATA_ARGUMENTS if a in params)}); rename the data's inputs")

    def forward(self, *args: Any) -> Any:
        import torch

        if len(args) != len(self.input_names):
            raise TypeError(f"{type(self.model).__name__} wrapper takes {len(self.input_names)} input(s) "
                            f"({', '.join(self.input_names)}), got {len(args)}")
        kwargs = dict(zip(self.input_names, args, strict=True))
        out = self.model(**kwargs, **self._fixed)
        choice = self.output
        if choice == "auto":
            choice = "logits" if _field(out, "logits") is not None else "last_hidden_state"
        if choice in ("mean", "mean-normalized", "cls"):
            hidden = _field(out, "last_hidden_state")
            if hidden is None or hidden.dim() != 3:
                raise ConfigError(f"--hf-output {choice} pools a sequence (N, tokens, features), but "
                                  f"{type(self.model).__name__} gives no such last_hidden_state; use "
                                  "--hf-output last_hidden_state or pooler_output")
            if choice == "cls":
                return hidden[:, 0]
            mask = kwargs.get("attention_mask")
            if mask is None:
                pooled = hidden.mean(dim=1)
            else:
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1) if choice == "mean-normalized" else pooled
        value = _field(out, choice)
        if value is None:
            have = ", ".join(k for k in _keys(out)) or type(out).__name__
            raise ConfigError(f"{type(self.model).__name__} has no output {choice!r} (it gives {have}); "
                              f"choose one with --hf-output")
        return value


def _field(out: Any, name: str) -> Any:
    if isinstance(out, dict):
        return out.get(name)
    return getattr(out, name, None)


def _keys(out: Any) -> list[str]:
    return list(out.keys()) if isinstance(out, dict) else []


def load_model(spec: HFSpec, input_names: tuple[str, ...], output: str = "auto", seed: int = 0,
               progress: bool = True) -> HFModule:
    """The folder's model (its weights, or initialised from ``seed`` when it has none) as an :class:`HFModule`."""
    if output not in HF_OUTPUTS and not output.isidentifier():
        raise ConfigError(f"--hf-output {output!r} is not one of {', '.join(HF_OUTPUTS)} or an output field name")
    return HFModule(_load_weights(spec, seed, progress), input_names, output, spec).eval()


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (checked without importing transformers)."""
    return any(c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedModel"
               for c in type(model).__mro__)


def wrap_hf_model(model: nn.Module, input_names: tuple[str, ...] | list[str], output: str = "auto") -> nn.Module:
    """``model`` wrapped in :class:`HFModule` when it is a transformers model, else unchanged."""
    if isinstance(model, HFModule) or not is_hf_model(model):
        return model
    return HFModule(model, tuple(input_names), output).eval()
