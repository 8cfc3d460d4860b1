"""Family-independent pieces of a tiny test config: a 2-layer text model, RoPE spelling, special ids.

Each family's `tiny_config` / `tiny_processor_files` (in its own module) builds on these; vlm/tiny.py
writes the checkpoint. This module sits below the families, so they can import it without a cycle.
"""

from __future__ import annotations

from typing import Any

EOS_TOKEN = "<|im_end|>"  # every tiny tokenizer ends a turn with this token
PAD_TOKEN = "<|endoftext|>"

# preprocessor_config.json settings every tiny checkpoint shares (rescale to [0, 1], normalise, bicubic).
IMAGE_PROCESSING: dict[str, Any] = {
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "do_convert_rgb": True,
    "resample": 3,
}


def padded_vocab(tokenizer: Any) -> int:
    """The tokenizer's size rounded up to a multiple of 64 (the embedding rows of a tiny model)."""
    return ((len(tokenizer) + 63) // 64) * 64


def chat_token_ids(tokenizer: Any) -> dict[str, int | None]:
    """eos / pad / bos ids of a tiny tokenizer, as config keyword arguments."""
    return dict(
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        bos_token_id=None,
    )


def text_config(vocab_size: int, **extra: Any) -> dict:
    """A 2-layer language model small enough for CPU tests (`extra`: special ids, RoPE, head size)."""
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


def mrope(section: list[int], **extra: Any) -> dict:
    """Multimodal-RoPE settings (`extra`: e.g. mrope_interleaved) in the spelling of the installed transformers."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("5.0"):
        return {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section, **extra}}
    return {"rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": section, **extra}}


def config_class(model_class_name: str) -> Any:
    """The transformers config class that goes with the model class `model_class_name`."""
    import transformers

    return getattr(transformers, model_class_name).config_class
