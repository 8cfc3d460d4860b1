"""Tiny random-weight checkpoints of the real architectures, laid out like hub checkpoints, built offline.

`write_tiny_checkpoint("qwen2_5_vl", out_dir)` writes config.json, model.safetensors, a byte-level BPE
tokenizer trained on a small built-in corpus (with the family's special tokens), a chat template in the
family's format and the preprocessing configs. Tests and the offline demo load these through the exact
code path real checkpoints take.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FAMILY_NAMES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl")

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_pad|>",
]
INTERNVL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]

CORPUS = (
    """Yes yes YES No no NO yes. no. Yes, No, the image shows a red fox in the snow. Is image 2 better
than image 1 under these criteria? Does this image show the prompt? Please answer yes or no. Answer Yes or No
first, then explain. Final answer: Yes. Final answer: No. The picture is sharp, colourful and well composed.
The video has smooth motion and consistent objects across frames. Text rendering, aesthetics, plausibility,
artefacts, alignment with the prompt, overall quality. A photo of a cat, a dog, a car, a tree, a house, a
person, a bird, a horse, a boat, an astronaut riding a horse on the moon. Frame seconds system user assistant
You are a helpful assistant. reference candidate criteria because however although blurry noisy distorted
"""
    * 4
)

SYSTEM_DEFAULT = "You are a helpful assistant."

# Own templates in each family's chat format: visuals render as the placeholder the processor expands.
QWEN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' and default_system -%}"
    "{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
INTERNVL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<IMG_CONTEXT>\\n' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<video>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def build_tokenizer(special_tokens: list[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained offline on `CORPUS`, with the given special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )


def _text_config(vocab_size: int, **extra: Any) -> dict:
    """A 2-layer language model small enough for CPU tests (special ids set by `build_config`)."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        **extra,
    )


def _mrope(section: list[int]) -> dict:
    """Multimodal-RoPE settings in the spelling of the installed transformers."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("5.0"):
        return {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}}
    return {"rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": section}}


def build_config(family: str, tokenizer: Any) -> Any:
    """A tiny transformers config of the family's real architecture."""
    import transformers

    vocab = ((len(tokenizer) + 63) // 64) * 64
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL + INTERNVL_SPECIAL}
    token_ids = dict(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        vision = dict(
            depth=2,
            embed_dim=32,
            hidden_size=32,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
            in_chans=3,
        )
        if family == "qwen2_5_vl":
            vision.update(
                intermediate_size=64,
                out_hidden_size=64,
                window_size=112,
                fullatt_block_indexes=[1],
                tokens_per_second=2,
            )
            cls = transformers.Qwen2_5_VLConfig
        else:
            vision.update(hidden_size=64)
            cls = transformers.Qwen2VLConfig
        text = _text_config(vocab, **token_ids, **_mrope([2, 3, 3]))
        return cls(
            text_config=text,
            vision_config=vision,
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False,
            **token_ids,
        )
    if family == "qwen3_vl":
        text = _text_config(vocab, head_dim=16, **token_ids, **_mrope([4, 2, 2]))
        text["rope_parameters" if "rope_parameters" in text else "rope_scaling"]["mrope_interleaved"] = True
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
            num_position_embeddings=256,
            deepstack_visual_indexes=[1],
        )
        return transformers.Qwen3VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False,
            **token_ids,
        )
    if family == "internvl":
        vision = dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=[224, 224],
            patch_size=[14, 14],
        )
        text = dict(_text_config(vocab, **token_ids), model_type="qwen2")
        return transformers.InternVLConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=ids["<IMG_CONTEXT>"],
            downsample_ratio=0.5,
            image_seq_length=64,
        )
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILY_NAMES)}")


def preprocessor_config(family: str) -> dict:
    """preprocessor_config.json contents in the real checkpoints' layout (smaller pixel budgets)."""
    common = {
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "resample": 3,
    }
    clip_mean, clip_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    if family in ("qwen2_vl", "qwen2_5_vl"):
        lo, hi = 56 * 56, 256 * 28 * 28
        return {
            **common,
            "image_processor_type": "Qwen2VLImageProcessor",
            "min_pixels": lo,
            "max_pixels": hi,
            "size": {"shortest_edge": lo, "longest_edge": hi},
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": clip_mean,
            "image_std": clip_std,
        }
    if family == "qwen3_vl":
        lo, hi = 64 * 32 * 32 // 16, 256 * 32 * 32
        return {
            **common,
            "image_processor_type": "Qwen2VLImageProcessor",
            "size": {"shortest_edge": lo, "longest_edge": hi},
            "patch_size": 16,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3,
        }
    return {
        **common,
        "image_processor_type": "GotOcr2ImageProcessor",
        "size": {"height": 224, "width": 224},
        "crop_to_patches": True,
        "min_patches": 1,
        "max_patches": 4,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }


def write_tiny_checkpoint(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight checkpoint of `family` to `out_dir` and return the directory."""
    import transformers

    if family not in FAMILY_NAMES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILY_NAMES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    special = INTERNVL_SPECIAL if family == "internvl" else QWEN_SPECIAL
    tokenizer = build_tokenizer(special)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.save_pretrained(out)
    if family == "internvl":
        _add_internvl_token_names(out)
    config = build_config(family, tokenizer)
    torch.manual_seed(seed)
    model_cls = {
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
        "internvl": transformers.InternVLForConditionalGeneration,
    }[family]
    model = model_cls(config).eval()
    _spread_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    template = INTERNVL_TEMPLATE if family == "internvl" else QWEN_TEMPLATE
    system = "" if family in ("qwen3_vl", "internvl") else SYSTEM_DEFAULT
    template = (
        template.replace("default_system", repr(system))
        if system
        else template.replace(" and default_system", " and false")
    )
    (out / "chat_template.jinja").write_text(template)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(family), indent=2))
    if family == "qwen3_vl":  # Qwen3-VL checkpoints ship a video budget counted over all frames
        video = {
            "size": {"shortest_edge": 4096, "longest_edge": 25165824},
            "patch_size": 16,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "fps": 2,
            "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3,
        }
        (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    if family == "internvl":
        (out / "processor_config.json").write_text(json.dumps({"image_seq_length": 64}, indent=2))
    return out


def _add_internvl_token_names(out: Path) -> None:
    """InternVL's processor reads named image tokens from the tokenizer config, as real checkpoints have."""
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["extra_special_tokens"] = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    cfg_path.write_text(json.dumps(cfg, indent=2))


def _spread_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-draw weights with a larger scale so the tiny model's answers depend visibly on the image."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5) * 4)
