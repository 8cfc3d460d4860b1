"""What every VLM family provides to the scorer, and the options that shape its visual inputs.

A family (one file each: qwen2_vl.py, qwen2_5_vl.py, qwen3_vl.py, internvl.py) knows how to:
- turn `Image`s / `Video`s into its pixel tensors on the model's device (differentiable for tensors),
- say which token ids replace the chat template's image/video placeholder,
- build the model's keyword inputs for a batch and the position ids of one sequence,
- run the vision tower once over a batch of visuals (`visual_features`) and hand a forward those features
  instead of pixels (`feature_inputs`), so a visual shared by many queries is encoded once per call,
- describe its tiny random-weight test checkpoint (config, special tokens, chat template, preprocessor files).
Everything is declared on `VLMFamily` with a default, so callers read attributes and never probe.
The scorer never looks inside a family; adding a family means adding one file and registering it
(docs/adding-a-family.md).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..media import Image, Video

# A piece of a prompt after placeholder expansion: text to tokenize, or token ids taken as they are.
Piece = str | list[int]


@dataclass
class VisualOptions:
    """Pixel and frame budgets; None means the checkpoint's own preprocessor setting."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    video_min_pixels: int | None = None
    video_max_pixels: int | None = None
    max_frames: int = 32
    fps: float = 2.0

    def validate(self) -> None:
        """Raise ValueError naming the option when a budget is impossible."""
        for name in ("min_pixels", "max_pixels", "video_min_pixels", "video_max_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer number of pixels, got {value!r}")
        for low, high in (("min_pixels", "max_pixels"), ("video_min_pixels", "video_max_pixels")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is larger than {high} ({hi}); lower {low} or raise {high}")
        if not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer, got {self.max_frames!r}")
        if not isinstance(self.fps, (int, float)) or self.fps <= 0:
            raise ValueError(f"fps must be a positive number of frames per second, got {self.fps!r}")


@dataclass(eq=False)
class EncodedVisual:
    """One image or video after preprocessing: model pixels plus the tokens that stand for it."""

    kind: str  # "image" or "video"
    pixel_values: torch.Tensor
    pieces: list[Piece]  # replaces the template placeholder
    num_tokens: int  # vision tokens fed to the language model
    grid_thw: torch.Tensor | None = None  # Qwen: [1, 3] (t, h, w) in patches
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class VisualFeatures:
    """One visual's vision-tower output, ready to be placed at its tokens in the language model's input."""

    kind: str  # "image" or "video"
    embeds: torch.Tensor  # [tokens, hidden]: one row per feature token of the visual, in order
    deepstack: list[torch.Tensor] = field(default_factory=list)  # Qwen3-VL: [tokens, hidden] per early layer


class VLMFamily:
    """Base class: preprocessing and prompt plumbing of one family of chat VLMs."""

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    model_class_name: ClassVar[str] = ""
    image_placeholder: ClassVar[str] = ""
    video_placeholder: ClassVar[str] = ""
    # Special token -> its value in transformers' `mm_token_type_ids` (empty: the model takes none).
    mm_token_types: ClassVar[dict[str, int]] = {}
    # --- the tiny test checkpoint (vlm/tiny.py writes it from these) ----------------------------------
    special_tokens: ClassVar[tuple[str, ...]] = ()  # the family's special tokens, added to the tiny tokenizer
    tiny_chat_template: ClassVar[str] = ""  # jinja in the family's chat format; `default_system` is filled in
    tiny_system_prompt: ClassVar[str] = ""  # system prompt the tiny template adds when none is given ("": none)
    tiny_token_names: ClassVar[dict[str, str]] = {}  # tokenizer_config.json `extra_special_tokens` (names)

    def __init__(self, config: Any, tokenizer: Any, preprocessor: dict, options: VisualOptions | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.preprocessor = dict(preprocessor or {})
        self.options = options or VisualOptions()
        self.options.validate()

    @property
    def placeholder_kinds(self) -> dict[str, str]:
        """Template text the visuals' tokens replace, and whether it stands for an image or a video."""
        return {self.image_placeholder: "image", self.video_placeholder: "video"}

    @classmethod
    def model_class_for(cls, model_type: str) -> str:
        """Name of the transformers class that loads a checkpoint of `model_type` (one of `model_types`)."""
        return cls.model_class_name

    @classmethod
    def tiny_config(cls, tokenizer: Any) -> Any:
        """A tiny transformers config of the family's real architecture, special ids from `tokenizer`."""
        raise NotImplementedError(f"the {cls.name} family declares no tiny test config")

    @classmethod
    def tiny_processor_files(cls) -> dict[str, dict]:
        """File name -> JSON contents of the tiny checkpoint's preprocessing configs (real layouts)."""
        raise NotImplementedError(f"the {cls.name} family declares no tiny preprocessor config")

    # --- visual preprocessing -------------------------------------------------------------------------
    def encode_images(self, images: list[Image], device: torch.device | str = "cpu") -> list[EncodedVisual]:
        """Preprocess still images (tensors batched per size) into `EncodedVisual`s on `device`."""
        raise NotImplementedError

    def encode_video(self, video: Video, device: torch.device | str = "cpu") -> EncodedVisual:
        """Preprocess one clip into an `EncodedVisual` on `device`."""
        raise NotImplementedError

    def model_inputs(self, visuals: list[EncodedVisual], dtype: torch.dtype) -> dict[str, Any]:
        """Keyword inputs for the model's forward for visuals in order of appearance in the batch."""
        raise NotImplementedError

    def position_ids(self, model: Any, input_ids: torch.Tensor, visuals: list[EncodedVisual]) -> torch.Tensor:
        """Position ids of one unpadded sequence (1-D [L], or [3, L] for multimodal RoPE)."""
        return torch.arange(input_ids.shape[-1], device=input_ids.device)

    @property
    def visual_token_ids(self) -> set[int]:
        """Token ids that belong to a visual's expansion (the prefix cache never cuts through them)."""
        raise NotImplementedError

    @property
    def feature_token_ids(self) -> set[int]:
        """Token ids whose embeddings the vision features replace (default: the image and video placeholders)."""
        return {self.token_id(self.image_placeholder), self.token_id(self.video_placeholder)}

    def visual_features(
        self, model: Any, visuals: list[EncodedVisual], dtype: torch.dtype
    ) -> list[VisualFeatures] | None:
        """Vision-tower output of each visual, the tower run once over the batch; None when this family cannot
        hand features to its model (the scorer then passes pixels to every forward)."""
        return None

    def feature_inputs(self, model: Any, input_ids: torch.Tensor, features: list[VisualFeatures]) -> dict[str, Any]:
        """Forward keywords for `input_ids` [B, L] whose visuals' features (in order of appearance, row by row)
        are given: `inputs_embeds` with each feature row at its token, as the model's own forward places them."""
        if not features:
            return {"input_ids": input_ids}
        embeds = model.get_input_embeddings()(input_ids)
        ids = torch.tensor(sorted(self.feature_token_ids), device=input_ids.device)
        mask = torch.isin(input_ids, ids)
        values = torch.cat([f.embeds for f in features]).to(embeds.device, embeds.dtype)
        if int(mask.sum()) != values.shape[0]:
            raise ValueError(f"{int(mask.sum())} visual tokens in the batch but {values.shape[0]} feature rows")
        return {"inputs_embeds": embeds.masked_scatter(mask[..., None], values)}

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`mm_token_type_ids` for `input_ids`: 0 for text, `mm_token_types` values for special tokens."""
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        for token, value in self.mm_token_types.items():
            types[input_ids == self.token_id(token)] = value
        return types

    # --- shared helpers -------------------------------------------------------------------------------
    def token_id(self, token: str) -> int:
        """Id of a special token, with a clear error when the tokenizer lacks it."""
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == getattr(self.tokenizer, "unk_token_id", -1):
            raise ValueError(
                f"the tokenizer has no {token!r} token, which a {self.name} checkpoint needs; "
                "is this the right checkpoint directory?"
            )
        return int(tid)


def call_with_supported(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `fn` with only the keyword arguments its signature accepts (transformers 4.5x vs 5.x)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = kwargs
    else:
        accepted = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **accepted)


def accepts_argument(fn: Any, name: str) -> bool:
    """True when `fn` names `name` as a parameter (not merely **kwargs)."""
    return name in inspect.signature(fn).parameters


def cache_keyword(model: Any) -> str:
    """The forward keyword of a KV cache: `cache` (transformers >= 5.24), else `past_key_values`."""
    return "cache" if accepts_argument(model.forward, "cache") else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned, under whichever name this transformers release gives it."""
    for key in ("cache", "past_key_values"):
        if key in output.keys():
            return output[key]
    raise ValueError("the model returned no KV cache; was use_cache=True passed?")
