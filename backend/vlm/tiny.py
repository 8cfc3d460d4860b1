"""Tiny random-weight checkpoints of the real architectures, laid out like hub checkpoints, built offline.

`write_tiny_checkpoint("qwen2_5_vl", out_dir)` writes config.json, model.safetensors, a byte-level BPE
tokenizer trained on a small built-in corpus (with the family's special tokens), a chat template in the
family's format and the preprocessing configs. Everything family-specific comes from the family class
(`tiny_config`, `special_tokens`, `tiny_chat_template`, ...; see vlm/base.py); this module only trains
the tokenizer, draws the weights and writes the files. `size="xs"` / `"m"` changes every family's depth
(1 / 4 text layers and vision blocks; "m" doubles the text MLP) on top of its tiny config ("s", the default).
Tests and the offline demo load these through the exact code path real checkpoints take.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .base import VLMFamily
from .registry import family_named, family_names
from .tiny_config import EOS_TOKEN, PAD_TOKEN

FAMILY_NAMES = family_names()

# Model sizes of a tiny checkpoint: "s" is each family's own tiny config; the others change depth (and MLP width)
# the same way for every family. Keys: text layers, text MLP width factor, vision-tower blocks.
SIZES: dict[str, dict[str, int]] = {
    "xs": {"text_layers": 1, "text_mlp": 1, "vision_depth": 1},
    "s": {"text_layers": 2, "text_mlp": 1, "vision_depth": 2},
    "m": {"text_layers": 4, "text_mlp": 2, "vision_depth": 4},
}
VISION_DEPTH_KEYS = ("depth", "num_hidden_layers")  # Qwen towers say depth, InternVL's ViT num_hidden_layers

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


def build_tokenizer(special_tokens: Sequence[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained offline on `CORPUS`, with the given special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, padding_side="left")


def build_config(family: str, tokenizer: Any) -> Any:
    """A tiny transformers config of the family's real architecture."""
    return family_named(family).tiny_config(tokenizer)


def preprocessor_config(family: str) -> dict:
    """preprocessor_config.json contents in the real checkpoints' layout (smaller pixel budgets)."""
    return family_named(family).tiny_processor_files()["preprocessor_config.json"]


def chat_template(family: type[VLMFamily]) -> str:
    """The family's tiny chat template with its default system prompt filled in (or switched off)."""
    template, system = family.tiny_chat_template, family.tiny_system_prompt
    if system:
        return template.replace("default_system", repr(system))
    return template.replace(" and default_system", " and false")


def check_size(size: str) -> dict[str, int]:
    """The settings of a tiny model size, with a clear error for unknown sizes."""
    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def resize_config(config: Any, size: str) -> Any:
    """`config` (a family's tiny config) at `size`: "s" unchanged, else text and vision depth and MLP width set."""
    settings = check_size(size)
    if size == "s":
        return config
    text, vision = config.text_config, config.vision_config
    _set_depth(text, "num_hidden_layers", settings["text_layers"])
    text.intermediate_size *= settings["text_mlp"]
    key = next((k for k in VISION_DEPTH_KEYS if isinstance(getattr(vision, k, None), int)), None)
    if key is None:
        raise ValueError(f"{type(vision).__name__} names its depth none of {', '.join(VISION_DEPTH_KEYS)}")
    _set_depth(vision, key, settings["vision_depth"])
    return config


def _set_depth(config: Any, key: str, depth: int) -> None:
    """Set a (sub)config's depth, keeping per-layer lists (`layer_types`) and block indexes (`*_indexes`) valid."""
    setattr(config, key, depth)
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and types:
        config.layer_types = [types[min(i, len(types) - 1)] for i in range(depth)]
    for name, value in list(vars(config).items()):
        if name.endswith("_indexes") and isinstance(value, list):
            setattr(config, name, [i for i in value if i < depth] or [depth - 1])


def write_tiny_checkpoint(family: str, out_dir: str | Path, seed: int = 0, size: str = "s") -> Path:
    """Write a tiny random-weight checkpoint of `family` at `size` (xs, s, m) to `out_dir` and return it."""
    import transformers

    family_cls = family_named(family)
    check_size(size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    special = list(family_cls.special_tokens)
    tokenizer = build_tokenizer(special)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.save_pretrained(out)
    if family_cls.tiny_token_names:
        _add_token_names(out, family_cls.tiny_token_names)
    config = resize_config(family_cls.tiny_config(tokenizer), size)
    torch.manual_seed(seed)
    model = getattr(transformers, family_cls.model_class_for(config.model_type))(config).eval()
    _spread_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    (out / "chat_template.jinja").write_text(chat_template(family_cls))
    for name, contents in family_cls.tiny_processor_files().items():
        (out / name).write_text(json.dumps(contents, indent=2))
    return out


def _add_token_names(out: Path, names: dict[str, str]) -> None:
    """Name special tokens in tokenizer_config.json (`extra_special_tokens`), as real checkpoints do."""
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["extra_special_tokens"] = dict(names)
    cfg_path.write_text(json.dumps(cfg, indent=2))


def _spread_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-draw weights with a larger scale so the tiny model's answers depend visibly on the image."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5) * 4)
