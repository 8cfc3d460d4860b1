"""Quantised loading of a judge: `quantization = none | int8 | nf4` as transformers' `BitsAndBytesConfig`.

int8 is LLM.int8() (bitsandbytes `Linear8bitLt`), nf4 is 4-bit NormalFloat (`Linear4bit`, compute dtype = the
judge's dtype). Only the language model's linear layers are quantised: the vision tower, the vision-language
projector and `lm_head` (the head whose yes/no logits are the score) keep the judge's dtype. Embeddings and
norms are never quantised by bitsandbytes. bitsandbytes runs on CUDA GPUs and, from 0.45, on the CPU.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..dependencies import require

QUANTIZATIONS = ("none", "int8", "nf4")
QUANTIZED_DEVICES = ("cuda", "cpu")  # the device types bitsandbytes quantises on
# Modules kept in the judge's dtype, named as transformers >= 4.52 nests them ("model.visual") and as older
# releases and checkpoints name them ("visual"): transformers 5 matches a skip name from the start of a module
# path, older releases anywhere in it. Qwen2/2.5/3-VL: visual (with its merger); InternVL: vision_tower and
# multi_modal_projector; every family: lm_head.
KEEP_UNQUANTIZED = ("lm_head", "visual", "vision_tower", "multi_modal_projector")
SKIP_MODULES = tuple(name for base in KEEP_UNQUANTIZED for name in (base, f"model.{base}"))
# Bytes one quantised weight element takes, scaling statistics included: int8 keeps one fp32 scale per output
# row (counted by the estimator separately), nf4 packs two 4-bit codes per byte plus one fp32 absmax per 64
# weights (bitsandbytes' default block size, no double quantisation).
NF4_BLOCK = 64
QUANT_ELEMENT_BYTES = {"int8": 1.0, "nf4": 0.5 + 4 / NF4_BLOCK}


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
    """transformers' BitsAndBytesConfig for `quantization` (int8 or nf4), vision tower and lm_head kept."""
    require("bitsandbytes", f"quantization {quantization!r}")
    from transformers import BitsAndBytesConfig

    # int8 matmuls announce on every call that they cast their inputs to fp16; that is how LLM.int8() works
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(SKIP_MODULES))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=False,
        llm_int8_skip_modules=list(SKIP_MODULES),
    )


def quantized_module_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules bitsandbytes replaced (Linear8bitLt / Linear4bit), for checks and reports."""
    return [name for name, m in model.named_modules() if type(m).__name__ in ("Linear8bitLt", "Linear4bit")]
