"""The registered families. A checkpoint's family is decided by its config's `model_type`, never by its name.

Adding a family: write its module (a `VLMFamily` subclass) and add the class to `FAMILIES` below.
"""

from __future__ import annotations

from typing import Any

from .base import VLMFamily
from .internvl import InternVLFamily
from .qwen2_5_vl import Qwen2_5_VLFamily
from .qwen2_vl import Qwen2VLFamily
from .qwen3_vl import Qwen3VLFamily

FAMILIES: tuple[type[VLMFamily], ...] = (Qwen2VLFamily, Qwen2_5_VLFamily, Qwen3VLFamily, InternVLFamily)


def family_for_config(config: Any) -> type[VLMFamily]:
    """The family class for a transformers config, with a clear error for unsupported models."""
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise ValueError(
        f"checkpoint has model_type {model_type!r}, which RewardDance cannot score yet; supported model types: "
        f"{supported} (InternVL must be the Hugging Face format, e.g. OpenGVLab/InternVL3-2B-hf)"
    )


def family_names() -> tuple[str, ...]:
    """Names of the registered families, in registry order (CLI choices, tiny checkpoints, tests)."""
    return tuple(family.name for family in FAMILIES)


def family_named(name: str) -> type[VLMFamily]:
    """The family class registered under `name` (e.g. 'qwen2_5_vl'), with a clear error for unknown names."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown family {name!r}; choose one of {', '.join(family_names())}")
