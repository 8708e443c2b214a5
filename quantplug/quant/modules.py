"""Quantized module wrappers: Conv2d, Linear and Embedding with a weight quantizer, and Add/Concat with
activation quantizers on their inputs.

Each wrapper subclasses the float module (same parameters, same state-dict keys) and may also carry an
``input_quant`` and ``output_quant`` (used only when the model's graph cannot be captured; with a
captured graph, shared activation quantizers are placed on it instead, see :mod:`quantplug.quant.prepare`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import ActQuantizer, WeightQuantizer

__all__ = ["MultiheadAttention", "QuantAdd", "QuantConcat", "QuantConv2d", "QuantEmbedding", "QuantLinear",
           "QUANT_WRAPPERS"]


class _WeightQuantMixin:
    weight_quant: WeightQuantizer
    input_quant: ActQuantizer | None
    output_quant: ActQuantizer | None
    qname: str

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        # An output quantizer only in the module fallback (``prepare`` without a captured graph): the
        # runtime's integer conv/matmul kernels need Q on the output (``DQ -> Conv -> Q``).
        q: ActQuantizer | None = getattr(self, "output_quant", None)
        return q(y) if q is not None else y

    def qweight(self) -> torch.Tensor:
        return self.weight_quant(self.weight)  # type: ignore[attr-defined]

    def qbias(self) -> torch.Tensor | None:
        """The bias rounded to INT32 at scale ``input_scale * weight_scale`` when the runtime will run it so
        (see :func:`quantplug.export.passes.quantize_biases`); set up by ``prepare`` via ``bias_input_quant``."""
        b: torch.Tensor | None = self.bias  # type: ignore[attr-defined]
        src: ActQuantizer | None = getattr(self, "bias_input_quant", None)
        wq = self.weight_quant
        if b is None or src is None or src.mode != "quant" or wq.frozen is not None or not wq.enabled or wq.group_size:
            return b
        s = (src.scale * wq.scale(self.weight)).detach()  # type: ignore[attr-defined]
        return b + (torch.round(b / s) * s - b).detach()


class QuantConv2d(nn.Conv2d, _WeightQuantMixin):
    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quant: WeightQuantizer, name: str,
                   input_quant: ActQuantizer | None = None) -> QuantConv2d:
        args: Any = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        kwargs: Any = {"device": conv.weight.device, "dtype": conv.weight.dtype}
        q = cls(*args, **kwargs)
        q.weight = conv.weight
        q.bias = conv.bias
        q.weight_quant = weight_quant
        q.input_quant = input_quant
        q.output_quant = None
        q.qname = name
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        return self._output(self._conv_forward(x, self.qweight(), self.qbias()))


class QuantLinear(nn.Linear, _WeightQuantMixin):
    @classmethod
    def from_float(cls, lin: nn.Linear, weight_quant: WeightQuantizer, name: str,
                   input_quant: ActQuantizer | None = None) -> QuantLinear:
        q = cls(lin.in_features, lin.out_features, lin.bias is not None,
                device=lin.weight.device, dtype=lin.weight.dtype)
        q.weight = lin.weight
        q.bias = lin.bias
        q.weight_quant = weight_quant
        q.input_quant = input_quant
        q.output_quant = None
        q.qname = name
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        return self._output(F.linear(x, self.qweight(), self.qbias()))


class QuantEmbedding(nn.Embedding, _WeightQuantMixin):
    """Weight-only INT8 embedding (one scale per row): a quarter of the FP32 table in the ONNX file."""

    @classmethod
    def from_float(cls, emb: nn.Embedding, weight_quant: WeightQuantizer, name: str) -> QuantEmbedding:
        q = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, emb.max_norm, emb.norm_type,
                emb.scale_grad_by_freq, emb.sparse, device=emb.weight.device, dtype=emb.weight.dtype)
        q.weight = emb.weight
        q.weight_quant = weight_quant
        q.input_quant = None
        q.qname = name
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.qweight(), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)


class QuantAdd(nn.Module):
    """``a + b`` with both inputs quantized (and the output, for runtimes that fuse a quantized add)."""

    def __init__(self, a_quant: ActQuantizer, b_quant: ActQuantizer, out_quant: ActQuantizer | None) -> None:
        super().__init__()
        self.a_quant, self.b_quant, self.out_quant = a_quant, b_quant, out_quant

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = self.a_quant(a) + self.b_quant(b)
        return self.out_quant(y) if self.out_quant is not None else y


class QuantConcat(nn.Module):
    """``torch.cat`` with one shared quantizer on every input, so all inputs have equal scales."""

    def __init__(self, dim: int, quant: ActQuantizer) -> None:
        super().__init__()
        self.dim, self.quant = dim, quant

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.quant(t) for t in tensors], dim=self.dim)


class MultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` as explicit layers: three ``nn.Linear`` projections, two ``torch.bmm``
    and the output projection, so that ``prepare`` quantizes them like any other linear and matmul
    (``nn.MultiheadAttention`` calls ``F.multi_head_attention_forward`` on raw parameters, which no
    quantizer can reach: its projections stayed float). Same results as the module it replaces."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        e, h = mha.embed_dim, mha.num_heads
        self.embed_dim, self.num_heads, self.head_dim = e, h, e // h
        self.batch_first, self.dropout = mha.batch_first, mha.dropout
        kw: Any = {"device": mha.out_proj.weight.device, "dtype": mha.out_proj.weight.dtype}
        bias = mha.in_proj_bias
        self.q_proj = nn.Linear(e, e, bias is not None, **kw)
        self.k_proj = nn.Linear(mha.kdim, e, bias is not None, **kw)
        self.v_proj = nn.Linear(mha.vdim, e, bias is not None, **kw)
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                weights = mha.in_proj_weight.chunk(3)  # type: ignore[union-attr]
            else:
                weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)  # type: ignore[assignment]
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(weights[i])
                if bias is not None:
                    proj.bias.copy_(bias.chunk(3)[i])
        self.out_proj = nn.Linear(e, e, mha.out_proj.bias is not None, **kw)
        self.out_proj.load_state_dict(mha.out_proj.state_dict())

    @staticmethod
    def supports(mha: nn.MultiheadAttention) -> bool:
        return mha.bias_k is None and not mha.add_zero_attn

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt, n = query.shape[0], query.shape[1]
        src = key.shape[0]
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(query).reshape(tgt, n * h, d).transpose(0, 1)
        k = self.k_proj(key).reshape(src, n * h, d).transpose(0, 1)
        v = self.v_proj(value).reshape(src, n * h, d).transpose(0, 1)
        scores = torch.bmm(q, k.transpose(1, 2)) * (float(d) ** -0.5)
        mask = attn_mask
        if mask is None and is_causal:
            mask = torch.ones(tgt, src, dtype=torch.bool, device=query.device).triu(1)
        if mask is not None:
            mask = mask.reshape(-1, tgt, src) if mask.dim() == 3 else mask
            scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        if key_padding_mask is not None:
            pad = key_padding_mask.reshape(n, 1, 1, src)
            scores = scores.reshape(n, h, tgt, src)
            scores = (scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else scores + pad)
            scores = scores.reshape(n * h, tgt, src)
        attn = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        out = self.out_proj(torch.bmm(attn, v).transpose(0, 1).reshape(tgt, n, self.embed_dim))
        if self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = attn.reshape(n, h, tgt, src)
        return out, weights.mean(dim=1) if average_attn_weights else weights


QUANT_WRAPPERS = (QuantConv2d, QuantLinear, QuantEmbedding)
