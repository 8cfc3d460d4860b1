"""The pieces every workflow spec uses: the node record `N`, the reward-model loader and note nodes, the
shared prompts and model notes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

REWARD_MODEL_HUB_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
REWARD_MODEL_DIR = REWARD_MODEL_HUB_ID.split("/")[-1]
REWARD_MODEL_CHOICE = f"{REWARD_MODEL_HUB_ID} (download)"  # the loader's preset entry while it is not installed
REWARD_MODEL_NOTE = (
    f"Reward model: the loader downloads {REWARD_MODEL_HUB_ID} (about 16 GB) into "
    f"`models/reward_models/{REWARD_MODEL_DIR}/` the first time the workflow runs, with a progress bar; "
    "'Qwen/Qwen2.5-VL-3B-Instruct (download)' is the smaller judge. Offline, download it elsewhere with "
    f"`hf download {REWARD_MODEL_HUB_ID} --local-dir models/reward_models/{REWARD_MODEL_DIR}` and copy the folder there."
)
HF = "https://huggingface.co/"
CAT_PROMPT = "a photo of a cat"
SEARCH_NOTE = (
    "The NOISE output replays the best result through SamplerCustomAdvanced with the same guider "
    "and sigmas and the euler sampler (for every algorithm but search_over_paths, which returns its result "
    "as the LATENT). noise_gradient (ReNO-style) ascends the reward's gradient through sampling and "
    "decoding: for few-step models, and it holds a second copy of the model.\n\n" + REWARD_MODEL_NOTE
)


@dataclass
class N:
    """One node of a workflow spec: widget values by input name, links by input name -> (node id, slot)."""

    id: int
    type: str
    pos: tuple[int, int]
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    title: str | None = None
    size: tuple[int, int] = (320, 160)
    models: list[dict] | None = None  # files this node needs (properties.models)
    text: str | None = None  # MarkdownNote body


def loader(id: int, pos: tuple[int, int]) -> N:
    """The Load Reward Model node as shipped: the 7B judge, downloaded into models/reward_models/ on first use.

    No properties.models entry: ComfyUI's Missing Models dialog handles single .safetensors files only, and the
    judge is a hub folder the loader downloads itself."""
    return N(
        id,
        "RewardDanceModelLoader",
        pos,
        {"model": REWARD_MODEL_CHOICE, "hub_id": "", "dtype": "default", "device": "default"},
        size=(340, 200),
    )


# How ComfyUI's frontend lays out a MarkdownNote's text (measured in headless Chromium, frontend of ComfyUI
# v0.8): graph units per character, per line and between paragraphs; the title bar and padding around the text.
NOTE_CHAR_WIDTH = 5.0
NOTE_LINE_HEIGHT = 13
NOTE_PARAGRAPH_GAP = 8
NOTE_CHROME = 50
NOTE_WIDTH = 420


def note_height(text: str, width: int = NOTE_WIDTH) -> int:
    """A MarkdownNote height that shows all of `text` at `width` (10% spare for wider words and code spans)."""
    per_line = max(10, int((width - 20) / NOTE_CHAR_WIDTH))
    paragraphs = text.split("\n\n")
    lines = sum(max(1, math.ceil(len(p) / per_line)) for p in paragraphs)
    text_height = lines * NOTE_LINE_HEIGHT + (len(paragraphs) - 1) * NOTE_PARAGRAPH_GAP
    return math.ceil(text_height * 1.1) + NOTE_CHROME


def note(id: int, x: int, text: str, bottom: int = -40, width: int = NOTE_WIDTH) -> N:
    """A MarkdownNote sized to its text, its lower edge at `bottom` (above the graph, which starts at y = 0)."""
    height = note_height(text, width)
    return N(id, "MarkdownNote", (x, bottom - height), text=text, size=(width, height))


PROMPT = "a red fox standing in fresh snow at golden hour, detailed fur, photograph"
TRAIN_PROMPTS = [
    "a photo of a blue fire hydrant",
    "a photo of a pink car",
    "a photo of two clocks",
    "a photo of four handbags",
    "a photo of a bench and a sports ball",
    "a photo of a toaster and an oven",
    "a photo of a purple wine glass and a black apple",
    "a photo of a green bus and a purple microwave",
]
