"""How much memory a judge needs, read before loading it: weights for a dtype and quantization, plus activations
for a pixel budget and a forward's token budget.

Weights. Every tensor is one of two kinds: the language model's 2-D `*.weight` tensors (its linear layers, the
input token embedding and `lm_head`), which int8 / nf4 quantise, and the rest (the vision tower, the projector,
norms, biases), which stays in the judge's dtype. A checkpoint with tied embeddings stores one table for both; a
quantised load gives lm_head its own quantised copy (`tied_head`). The exact lm_head rows a quantised judge keeps
for its answer tokens (a few dozen rows) are not counted. The element counts come from the safetensors headers when
the files are local (exact: the sizes of the stored tensors, nothing loaded), else from config.json's sizes
(`config_counts`).

    weight_bytes = other_elements * dtype_bytes + quantised_elements * q + quantised_rows * r
    (quantised: + tied_head elements and rows)
    none: q = dtype_bytes, r = 0; int8: q = 1, r = 4 (one fp32 scale per row);
    nf4: q = 0.5 + 4 / 64 (two 4-bit codes per byte, one fp32 absmax per block of 64), r = 0

Activations (a rough upper bound of one scoring forward, not measured to the same bar):

    visual_tokens  = max_pixels / patch_size^2 / merge^2       (merge: Qwen spatial_merge_size, InternVL 1/ratio)
    kv_cache       = 2 * layers * kv_heads * head_dim * batch_tokens * dtype_bytes
    text_working   = batch_tokens * (4 * hidden + 2 * intermediate) * dtype_bytes
    vision_working = visual_tokens * merge^2 * (4 * vision_hidden + 2 * vision_intermediate) * dtype_bytes
    activation_bytes = kv_cache + text_working + vision_working
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .vlm.quantization import KEEP_UNQUANTIZED, NF4_BLOCK, check_quantization

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
INT8_ROW_SCALE_BYTES = 4
NOT_QUANTIZED_PARTS = (*KEEP_UNQUANTIZED, "vision_model", "mlp1")  # vision tower / projector, older names too
EMBEDDING_PARTS = ("embed_tokens",)  # the input token embedding (tied to lm_head when lm_head is not stored)
HEAD_PARTS = ("lm_head",)


@dataclass(frozen=True)
class WeightCounts:
    """Element counts of a checkpoint's weights: those int8 / nf4 quantise (and their output rows), the rest, and
    the tied lm_head a quantised load adds (0 when lm_head is stored)."""

    quantized: int
    quantized_rows: int
    other: int
    source: str  # "safetensors" (exact) or "config" (from config.json's sizes)
    tied_head: int = 0
    tied_head_rows: int = 0

    @property
    def total(self) -> int:
        """Every weight element."""
        return self.quantized + self.other


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a judge needs: weights (None: unknown) and the activations of one forward."""

    weight_bytes: int | None
    activation_bytes: int | None
    parameters: int | None
    dtype: str
    quantization: str
    source: str  # safetensors, config or unknown

    @property
    def total_bytes(self) -> int | None:
        """Weights plus activations (None when either is unknown)."""
        if self.weight_bytes is None or self.activation_bytes is None:
            return None
        return self.weight_bytes + self.activation_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON view (GET /v1/models, `rewarddance models --json`)."""
        return {**asdict(self), "total_bytes": self.total_bytes}


# --- weights ----------------------------------------------------------------------------------------------------
def is_quantized_tensor(name: str, shape: list[int]) -> bool:
    """True for the language model's 2-D weights: linear layers, token embedding, lm_head (what int8 / nf4 replace)."""
    parts = name.split(".")
    return len(shape) == 2 and parts[-1] == "weight" and not any(p in NOT_QUANTIZED_PARTS for p in parts)


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of one .safetensors file (name -> dtype, shape, offsets), read without loading."""
    with path.open("rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def safetensors_counts(folder: Path) -> WeightCounts | None:
    """Exact counts from the headers of the folder's *.safetensors files (None when there are none)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    quantized = rows = other = 0
    embedding, has_head = (0, 0), False
    for file in files:
        for name, info in safetensors_header(file).items():
            shape = list(info["shape"])
            n = _product(shape)
            if is_quantized_tensor(name, shape):
                quantized, rows = quantized + n, rows + shape[0]
                parts = name.split(".")
                has_head = has_head or any(p in HEAD_PARTS for p in parts)
                embedding = (n, shape[0]) if any(p in EMBEDDING_PARTS for p in parts) else embedding
            else:
                other += n
    tied_head, tied_rows = (0, 0) if has_head else embedding
    return WeightCounts(quantized, rows, other, "safetensors", tied_head, tied_rows)


def config_counts(config: dict[str, Any]) -> WeightCounts:
    """Approximate counts from config.json's sizes (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL)."""
    text = config.get("text_config") or config.get("llm_config") or config
    vision = config.get("vision_config") or {}
    tied = _tied(config, text)
    linear, linear_rows, other = _text_counts(text, tied)
    vocab, h = text["vocab_size"], text["hidden_size"]
    tied_head, tied_rows = (vocab * h, vocab) if tied else (0, 0)
    return WeightCounts(
        linear, linear_rows, other + _vision_count(config, vision, text), "config", tied_head, tied_rows
    )


def _tied(config: dict[str, Any], text: dict[str, Any]) -> bool:
    """Whether lm_head shares the input embedding (the top-level setting wins, as transformers reads it)."""
    return bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))


def _text_counts(text: dict[str, Any], tied: bool) -> tuple[int, int, int]:
    """(quantised elements: linear layers and token tables, their rows, other elements) of the language model."""
    h, layers, inter = text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]
    heads = text["num_attention_heads"]
    kv = text.get("num_key_value_heads") or heads
    hd = text.get("head_dim") or h // heads
    q, k = heads * hd, kv * hd
    per_layer = h * q + 2 * h * k + q * h + 3 * h * inter
    per_layer_rows = q + 2 * k + h + 2 * inter + h
    bias = 0 if text.get("attention_bias") is False else q + 2 * k  # Qwen2 / 2.5 q, k, v biases
    qk_norm = 2 * hd if str(text.get("model_type", "")).startswith("qwen3") else 0
    tables = 1 if tied else 2  # the input embedding, and lm_head when it is stored
    embed, embed_rows = tables * text["vocab_size"] * h, tables * text["vocab_size"]
    other = layers * (2 * h + bias + qk_norm) + h
    return layers * per_layer + embed, layers * per_layer_rows + embed_rows, other


def _vision_count(config: dict[str, Any], vision: dict[str, Any], text: dict[str, Any]) -> int:
    """Elements of the vision tower and its projector into the language model."""
    if not vision:
        return 0
    qwen2 = "embed_dim" in vision and "out_hidden_size" not in vision  # Qwen2-VL: hidden_size is the LM width
    d = vision["embed_dim"] if qwen2 else vision["hidden_size"]
    depth = vision.get("depth") or vision["num_hidden_layers"]
    if qwen2:
        mlp = 2 * d * int(d * vision.get("mlp_ratio", 4))
    else:
        mlp = (
            (3 if vision.get("hidden_act") == "silu" and "deepstack_visual_indexes" not in vision else 2)
            * d
            * vision["intermediate_size"]
        )
    block = 4 * d * d + mlp + 8 * d
    patch = vision["patch_size"] if isinstance(vision["patch_size"], int) else vision["patch_size"][0]
    embed = vision.get("in_channels", 3) * vision.get("temporal_patch_size", 1) * patch * patch * d
    out = text["hidden_size"]
    if "downsample_ratio" in config:  # InternVL: pixel shuffle, then LayerNorm + 2-layer MLP
        wide = d * round(1 / config["downsample_ratio"] ** 2)
        size = vision.get("image_size", 448)
        patches = (size if isinstance(size, int) else size[0]) // patch
        return depth * block + embed + (patches * patches + 1) * d + wide * out + out * out
    merge = vision.get("spatial_merge_size", 2) ** 2
    mergers = 1 + len(vision.get("deepstack_visual_indexes") or [])
    positions = vision.get("num_position_embeddings", 0) * d
    return depth * block + embed + positions + mergers * (d * merge * d * merge + d * merge * out)


def _product(shape: list[int]) -> int:
    """Number of elements of a tensor shape."""
    n = 1
    for s in shape:
        n *= int(s)
    return n


def weight_bytes(counts: WeightCounts, dtype: str, quantization: str) -> int:
    """Weight bytes of `counts` in `dtype` with `quantization` applied to the quantised linear layers."""
    size = DTYPE_BYTES[dtype]
    elements, rows = counts.quantized + counts.tied_head, counts.quantized_rows + counts.tied_head_rows
    if quantization == "int8":
        quantized = elements * 1 + rows * INT8_ROW_SCALE_BYTES
    elif quantization == "nf4":
        quantized = round(elements * (0.5 + 4 / NF4_BLOCK))
    else:
        quantized = counts.quantized * size
    return counts.other * size + quantized


# --- activations --------------------------------------------------------------------------------------------------
def visual_tokens(config: dict[str, Any], max_pixels: int) -> int:
    """Language-model tokens one image of `max_pixels` pixels becomes."""
    vision = config.get("vision_config") or {}
    patch = vision.get("patch_size", 14)
    patch = patch if isinstance(patch, int) else patch[0]
    merge = round(1 / config["downsample_ratio"] ** 2) if "downsample_ratio" in config else _merge(vision)
    return max(1, max_pixels // (patch * patch * merge))


def _merge(vision: dict[str, Any]) -> int:
    """Patches merged into one language-model token (Qwen: spatial_merge_size squared)."""
    return vision.get("spatial_merge_size", 2) ** 2


def activation_bytes(config: dict[str, Any], dtype: str, max_pixels: int, batch_tokens: int) -> int:
    """The module docstring's activation formula: KV cache, text and vision working sets of one forward."""
    size = DTYPE_BYTES[dtype]
    text = config.get("text_config") or config.get("llm_config") or config
    vision = config.get("vision_config") or {}
    h, layers, heads = text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]
    kv = text.get("num_key_value_heads") or heads
    hd = text.get("head_dim") or h // heads
    kv_cache = 2 * layers * kv * hd * batch_tokens * size
    text_working = batch_tokens * (4 * h + 2 * text["intermediate_size"]) * size
    if not vision:
        return kv_cache + text_working
    d = vision.get("embed_dim") if "out_hidden_size" not in vision and "embed_dim" in vision else vision["hidden_size"]
    v_inter = vision.get("intermediate_size") or int(d * vision.get("mlp_ratio", 4))
    merge = round(1 / config["downsample_ratio"] ** 2) if "downsample_ratio" in config else _merge(vision)
    patches = visual_tokens(config, max_pixels) * merge
    return kv_cache + text_working + patches * (4 * d + 2 * v_inter) * size


# --- the estimate --------------------------------------------------------------------------------------------------
def dtype_name(dtype: str | torch.dtype | None, device: str = "cpu") -> str:
    """bf16 / fp16 / fp32 for a dtype name or torch dtype ('auto': bf16 on CUDA, else fp32)."""
    from .devices import resolve_dtype

    resolved = resolve_dtype(dtype, device)
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[resolved]


def find_config(model: str) -> tuple[dict[str, Any], Path] | None:
    """config.json of a local checkpoint folder or of a hub id already in the hub cache (never downloads)."""
    path = Path(model).expanduser()
    if path.is_dir():
        file = path / "config.json"
        return (json.loads(file.read_text()), path) if file.is_file() else None
    from .model_sources import looks_like_hub_id

    if not looks_like_hub_id(model):
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    if not isinstance(cached, str):
        return None
    return json.loads(Path(cached).read_text()), Path(cached).parent


def estimate_memory(
    model: str,
    dtype: str | torch.dtype | None = "auto",
    quantization: str | None = "none",
    max_pixels: int = 28 * 28 * 1280,
    batch_tokens: int = 16384,
    device: str = "cuda",
) -> MemoryEstimate:
    """Weight and activation bytes of `model` (a folder or a cached hub id); unknown (None) without a config."""
    dtype = dtype_name(dtype, device)
    quantization = check_quantization(quantization)
    if not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
    if not isinstance(batch_tokens, int) or batch_tokens <= 0:
        raise ValueError(f"batch_tokens must be a positive number of tokens, got {batch_tokens!r}")
    found = find_config(str(model))
    if found is None:
        return MemoryEstimate(None, None, None, dtype, quantization, "unknown")
    config, folder = found
    return estimate_from_config(config, dtype, quantization, max_pixels, batch_tokens, folder)


def estimate_from_config(
    config: dict[str, Any],
    dtype: str,
    quantization: str,
    max_pixels: int,
    batch_tokens: int,
    folder: Path | None = None,
) -> MemoryEstimate:
    """The estimate for a config.json dict (weights from `folder`'s safetensors headers when it has them)."""
    counts = (safetensors_counts(folder) if folder is not None else None) or config_counts(config)
    return MemoryEstimate(
        weight_bytes(counts, dtype, quantization),
        activation_bytes(config, dtype, max_pixels, batch_tokens),
        counts.total,
        dtype,
        quantization,
        counts.source,
    )


def measured_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a loaded model's weights hold: parameters and buffers once each, plus bitsandbytes' quantisation
    statistics (int8 row scales, nf4 absmax), which are not parameters (an int8 layer moves its scales into its
    state on its first call)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        scales = getattr(weight, "SCB", None)
        if scales is None:
            scales = getattr(getattr(module, "state", None), "SCB", None)
        for stat in (scales, getattr(getattr(weight, "quant_state", None), "absmax", None)):
            if isinstance(stat, torch.Tensor):
                total += stat.numel() * stat.element_size()
    return total


def format_bytes(n: int | None) -> str:
    """'16.6 GB' style (decimal units); 'unknown' for None."""
    if n is None:
        return "unknown"
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
