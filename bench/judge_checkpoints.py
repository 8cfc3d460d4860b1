"""Random-weight Qwen2.5-VL judges at real model shapes (tiny, small, 0.5b, 3b, 7b) for the benchmarks: the tiny
test checkpoint's tokenizer and special tokens with the real checkpoints' sizes and pixel budget."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

# Shapes of the real checkpoints (Qwen/Qwen2.5-VL-3B-Instruct, -7B-Instruct); "small" sits between tiny and 3B.
REAL_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
    hidden_act="silu",
)
CONFIGS: dict[str, dict[str, Any]] = {
    "small": dict(
        text=dict(
            hidden_size=512,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            intermediate_size=1536,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
        vision=dict(
            depth=4,
            hidden_size=256,
            intermediate_size=768,
            num_heads=4,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1, 3],
            tokens_per_second=2,
            hidden_act="silu",
        ),
        mrope=[8, 12, 12],
    ),
    # ~0.5B: the text shape of Qwen2.5-0.5B (as in InternVL3-1B) with the small vision tower.
    "0.5b": dict(
        text=dict(
            hidden_size=896,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            intermediate_size=4864,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
        vision=dict(
            depth=4,
            hidden_size=256,
            intermediate_size=768,
            num_heads=4,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1, 3],
            tokens_per_second=2,
            hidden_act="silu",
        ),
        mrope=[8, 12, 12],  # head_dim 64
    ),
    "3b": dict(
        text=dict(
            hidden_size=2048,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            intermediate_size=11008,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
        vision=REAL_VISION,
        mrope=[16, 24, 24],
    ),
    "7b": dict(
        text=dict(
            hidden_size=3584,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            intermediate_size=18944,
            vocab_size=152064,
            tie_word_embeddings=False,
        ),
        vision=REAL_VISION,
        mrope=[16, 24, 24],
    ),
}
# The real checkpoints' image pixel budget (the tiny checkpoint keeps its small test budget).
REAL_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16384}


# --- images ---------------------------------------------------------------------------------------------


def write_checkpoint(name: str, out: Path, device: str, dtype: torch.dtype, seed: int = 0) -> Path:
    """Write a random-weight Qwen2.5-VL checkpoint of config `name` (tiny, small, 0.5b, 3b, 7b) to `out`."""
    from rewarddance.backend.vlm.tiny import write_tiny_checkpoint

    if name == "tiny":
        return write_tiny_checkpoint("qwen2_5_vl", out, seed=seed)
    import transformers

    from rewarddance.backend.vlm.qwen2_5_vl import Qwen2_5_VLFamily
    from rewarddance.backend.vlm.qwen2_vl import QWEN_SPECIAL
    from rewarddance.backend.vlm.tiny import build_tokenizer, chat_template, preprocessor_config

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(QWEN_SPECIAL)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    tokenizer.save_pretrained(out)
    config = model_config(name, tokenizer)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    spread_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    (out / "chat_template.jinja").write_text(chat_template(Qwen2_5_VLFamily))
    pre = preprocessor_config("qwen2_5_vl")
    pre.update(
        REAL_PIXELS, size={"shortest_edge": REAL_PIXELS["min_pixels"], "longest_edge": REAL_PIXELS["max_pixels"]}
    )
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return out


def model_config(name: str, tokenizer: Any) -> Any:
    """The Qwen2.5-VL config of size `name`: the tiny config's special tokens with the chosen shapes."""
    import transformers

    from rewarddance.backend.vlm.tiny import build_config

    spec = CONFIGS[name]
    base = build_config("qwen2_5_vl", tokenizer)
    if spec["text"]["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {spec['text']['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})")
    text = base.text_config.to_dict()
    text.pop("layer_types", None)  # derived from num_hidden_layers
    text.update(spec["text"], max_position_embeddings=128000, rms_norm_eps=1e-6)
    rope_key = "rope_parameters" if "rope_parameters" in text and text["rope_parameters"] else "rope_scaling"
    text[rope_key] = dict(text[rope_key], mrope_section=spec["mrope"])
    if rope_key == "rope_parameters":
        text[rope_key]["rope_theta"] = 1000000.0
    else:
        text["rope_theta"] = 1000000.0
    vision = base.vision_config.to_dict()
    vision.update(spec["vision"], out_hidden_size=spec["text"]["hidden_size"], embed_dim=spec["vision"]["hidden_size"])
    return transformers.Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=base.image_token_id,
        video_token_id=base.video_token_id,
        vision_start_token_id=base.vision_start_token_id,
        vision_end_token_id=base.vision_end_token_id,
        tie_word_embeddings=spec["text"]["tie_word_embeddings"],
        eos_token_id=base.text_config.eos_token_id,
        pad_token_id=base.text_config.pad_token_id,
    )


def spread_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-draw matrices with std 1/sqrt(fan_in) so random-weight answers depend visibly on the image."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=gen)
