"""Quantised loading of a judge: `quantization = none | int8 | nf4` as transformers' `BitsAndBytesConfig`, then the
token tables.

int8 is LLM.int8() (bitsandbytes `Linear8bitLt`), nf4 is 4-bit NormalFloat (`Linear4bit`, compute dtype = the
judge's dtype). transformers quantises the language model's linear layers; right after its load,
`quantize_token_tables` converts the two vocabulary-sized tables, which on a 151k-token vocabulary are a large part
of a judge: the input token embedding becomes `EmbeddingNF4` / `Embedding8bit` and `lm_head` becomes `Linear4bit` /
`Linear8bitLt` wrapped in `ExactRowsHead`, which keeps an exact copy (the judge's dtype) of the rows of the tokens a
judge reads its score from (the yes/no words, digits, verdict tokens: the caller passes their ids), so those logits
are the full-precision head's for the same hidden state, while every other logit (generation, chain of thought)
comes from the quantised head. Tied embeddings (one tensor for both tables) become two quantised tables and no
full-precision copy. The vision tower and the vision-language projector keep the judge's dtype; norms are never
quantised. bitsandbytes runs on CUDA GPUs and, from 0.45, on the CPU.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from ..dependencies import require

QUANTIZATIONS = ("none", "int8", "nf4")
QUANTIZED_DEVICES = ("cuda", "cpu")  # the device types bitsandbytes quantises on
# Modules kept in the judge's dtype, named as transformers >= 4.52 nests them ("model.visual") and as older
# releases and checkpoints name them ("visual"): transformers 5 matches a skip name from the start of a module
# path, older releases anywhere in it. Qwen2/2.5/3-VL: visual (with its merger); InternVL: vision_tower and
# multi_modal_projector.
KEEP_UNQUANTIZED = ("visual", "vision_tower", "multi_modal_projector")
# transformers also skips lm_head: `quantize_token_tables` converts it (with its exact rows) after the load.
SKIP_MODULES = tuple(name for base in ("lm_head", *KEEP_UNQUANTIZED) for name in (base, f"model.{base}"))
# Bytes one quantised weight element takes, scaling statistics included: int8 keeps one fp32 scale per output
# row (counted by the estimator separately), nf4 packs two 4-bit codes per byte plus one fp32 absmax per 64
# weights (bitsandbytes' default block size, no double quantisation).
NF4_BLOCK = 64
QUANT_ELEMENT_BYTES = {"int8": 1.0, "nf4": 0.5 + 4 / NF4_BLOCK}
INT8_THRESHOLD = 6.0  # LLM.int8()'s outlier threshold (transformers' default), for every int8 linear layer
BNB_CLASSES = ("Linear8bitLt", "Linear4bit", "Embedding8bit", "EmbeddingNF4")
CAST_NOTICE = "MatMul8bitLt: inputs will be cast"  # int8 matmuls say so on every call: that is how LLM.int8() works


class _DropCastNotice(logging.Filter):
    """Drops bitsandbytes' per-call int8 cast notice (a log record from bitsandbytes 0.50, a warning before)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(CAST_NOTICE)


DROP_CAST_NOTICE = _DropCastNotice()


def check_quantization(quantization: str | None) -> str:
    """The quantization name ('none' for None), or ValueError naming the option and its choices."""
    if quantization is None:
        return "none"
    if not isinstance(quantization, str) or quantization.lower() not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    return quantization.lower()


def check_quantized_device(quantization: str, device: str, dtype: torch.dtype) -> None:
    """Refuse a device or dtype bitsandbytes cannot quantise on, saying what works."""
    kind = torch.device(device).type
    if kind not in QUANTIZED_DEVICES:
        raise ValueError(
            f"quantization {quantization!r} runs on CUDA GPUs and on the CPU (bitsandbytes), not on {device!r}; "
            "use --device cuda or --device cpu, or quantization none"
        )
    if kind == "cpu" and dtype == torch.float16:
        raise ValueError(
            f"quantization {quantization!r} on the CPU computes in fp32 or bf16, not fp16; use --dtype fp32 or bf16"
        )


def quantization_config(quantization: str, dtype: torch.dtype) -> Any:
    """transformers' BitsAndBytesConfig for `quantization` (int8 or nf4): vision tower and lm_head skipped."""
    require("bitsandbytes", f"quantization {quantization!r}")
    from transformers import BitsAndBytesConfig

    warnings.filterwarnings("ignore", message=CAST_NOTICE)
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(DROP_CAST_NOTICE)

    if quantization == "int8":
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD, llm_int8_skip_modules=list(SKIP_MODULES)
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=False,
        llm_int8_skip_modules=list(SKIP_MODULES),
    )


class ExactRowsHead(torch.nn.Module):
    """A quantised lm_head whose logits for `token_ids` come from exact (unquantised) copies of their rows."""

    def __init__(
        self, quantized: torch.nn.Module, token_ids: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor | None
    ):
        super().__init__()
        self.quantized = quantized
        self.in_features, self.out_features = quantized.in_features, quantized.out_features
        self.register_buffer("token_ids", token_ids, persistent=False)  # [K] long
        self.register_buffer("rows", rows, persistent=False)  # [K, hidden], the judge's dtype
        self.register_buffer("row_bias", bias, persistent=False)  # [K] or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [..., vocab]: the quantised head's, with the exact rows' columns written over."""
        x = x.to(self.rows.device)  # under a multi-device map the hidden states may come from another device
        logits = self.quantized(x)
        if self.token_ids.numel() == 0:
            return logits
        exact = torch.nn.functional.linear(x.to(self.rows.dtype), self.rows, self.row_bias)
        return logits.index_copy_(-1, self.token_ids, exact.to(logits.dtype))


def quantize_token_tables(
    model: torch.nn.Module, quantization: str, dtype: torch.dtype, exact_token_ids: Iterable[int] = ()
) -> None:
    """After transformers' quantised load: quantise the input embedding and lm_head in place (int8 / nf4), the
    lm_head rows of `exact_token_ids` kept exact, tied tables untied and never re-tied."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    table, weight = embedding.weight.data, head.weight.data
    vocab = weight.shape[0]
    ids = sorted({int(i) for i in exact_token_ids if 0 <= int(i) < vocab})
    token_ids = torch.tensor(ids, dtype=torch.long, device=weight.device)
    rows = weight[token_ids].to(dtype).clone()
    bias = head.bias.data if head.bias is not None else None
    row_bias = bias[token_ids].to(dtype).clone() if bias is not None else None
    new_embedding = quantized_embedding(table, quantization, dtype)
    new_head = quantized_linear(weight, bias, quantization, dtype)
    del table, weight, bias
    model.set_input_embeddings(new_embedding)
    model.set_output_embeddings(ExactRowsHead(new_head, token_ids, rows, row_bias))
    _untie(model)


def _untie(model: torch.nn.Module) -> None:
    """Make sure transformers never ties lm_head to the input embedding again (tie_weights, resizing)."""
    model._tied_weights_keys = {}
    model.all_tied_weights_keys = {}
    for part in (model.config, model.config.get_text_config()):
        if getattr(part, "tie_word_embeddings", False):
            part.tie_word_embeddings = False


def quantized_embedding(table: torch.Tensor, quantization: str, dtype: torch.dtype) -> torch.nn.Module:
    """bitsandbytes' EmbeddingNF4 / Embedding8bit holding `table` [vocab, hidden] quantised, returning `dtype`."""

    vocab, hidden = table.shape
    module = _embedding_class(quantization)(vocab, hidden, dtype=dtype, device="meta")
    module.weight = _nf4_parameter(table, module) if quantization == "nf4" else _int8_parameter(table)
    return module


@functools.cache
def _embedding_class(quantization: str) -> type:
    """bitsandbytes' EmbeddingNF4 / Embedding8bit with a state dict (the quantised table and its statistics, as
    their Linear classes save theirs; bitsandbytes' own raise), so sizing a model by its state dict works
    (ComfyUI's model_size)."""
    import bitsandbytes as bnb

    base = bnb.nn.EmbeddingNF4 if quantization == "nf4" else bnb.nn.Embedding8bit

    def _save_to_state_dict(self: Any, destination: dict, prefix: str, keep_vars: bool) -> None:
        torch.nn.Module._save_to_state_dict(self, destination, prefix, keep_vars)
        if quantization == "nf4":
            stats = {f"weight.{k}": v for k, v in self.weight.quant_state.as_dict(packed=True).items()}
        else:
            stats = {"SCB": self.weight.SCB}
        for key, value in stats.items():
            destination[prefix + key] = value if keep_vars else value.detach()

    return type(base.__name__, (base,), {"_save_to_state_dict": _save_to_state_dict, "__module__": __name__})


def quantized_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, quantization: str, dtype: torch.dtype
) -> torch.nn.Module:
    """bitsandbytes' Linear4bit (nf4) / Linear8bitLt holding `weight` [out, in] quantised; `bias` kept."""
    import bitsandbytes as bnb

    out_features, in_features = weight.shape
    if quantization == "nf4":
        module = bnb.nn.Linear4bit(
            in_features,
            out_features,
            bias=bias is not None,
            compute_dtype=dtype,
            compress_statistics=False,
            quant_type="nf4",
            device="meta",
        )
        module.weight = _nf4_parameter(weight, module)
    else:
        module = bnb.nn.Linear8bitLt(
            in_features,
            out_features,
            bias=bias is not None,
            has_fp16_weights=False,
            threshold=INT8_THRESHOLD,
            device="meta",
        )
        module.weight = _int8_parameter(weight)
    if bias is not None:
        module.bias = torch.nn.Parameter(bias.to(dtype).clone(), requires_grad=False)
    return module


def _nf4_parameter(weight: torch.Tensor, module: torch.nn.Module) -> Any:
    """`weight` as a quantised bitsandbytes Params4bit (nf4, blocks of NF4_BLOCK, no double quantisation)."""
    import bitsandbytes as bnb

    packed, state = bnb.functional.quantize_4bit(
        weight.contiguous(), blocksize=NF4_BLOCK, compress_statistics=False, quant_type="nf4"
    )
    module.quant_state = state
    return bnb.nn.Params4bit(
        packed,
        requires_grad=False,
        quant_state=state,
        blocksize=NF4_BLOCK,
        compress_statistics=False,
        quant_type="nf4",
        module=module,
        bnb_quantized=True,
    )


def _int8_parameter(weight: torch.Tensor) -> Any:
    """`weight` as a quantised bitsandbytes Int8Params (int8 rows, one fp32 scale per row)."""
    import bitsandbytes as bnb

    codes, scales, _ = bnb.functional.int8_vectorwise_quant(weight.contiguous().to(torch.float16))
    return bnb.nn.Int8Params(codes, requires_grad=False, has_fp16_weights=False, CB=codes, SCB=scales)


def quantized_module_names(model: torch.nn.Module) -> list[str]:
    """Names of the bitsandbytes modules (Linear8bitLt / Linear4bit, Embedding8bit / EmbeddingNF4), for checks."""
    return [name for name, m in model.named_modules() if type(m).__name__ in BNB_CLASSES]
