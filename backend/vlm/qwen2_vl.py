"""Qwen2-VL: dynamic-resolution patches (14 px, 2x2 merge), multimodal RoPE, `<|image_pad|>` tokens.

Qwen2.5-VL and Qwen3-VL reuse this preprocessing with their own patch sizes and prompt details
(see qwen2_5_vl.py and qwen3_vl.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..media import Image, Video
from .base import EncodedVisual, VisualFeatures, VLMFamily, call_with_supported
from .resize import normalize, resize_pil, resize_tensor, sample_frame_indices, smart_resize
from .tiny_config import IMAGE_PROCESSING, chat_token_ids, config_class, mrope, padded_vocab, text_config

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

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
SYSTEM_DEFAULT = "You are a helpful assistant."

# The tiny checkpoint's own template in Qwen's chat format: visuals render as the placeholder the scorer expands.
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


def qwen_vision_config(patch_size: int, hidden_size: int, **extra: Any) -> dict:
    """A 2-block Qwen vision tower: `patch_size` px patches, 2x2 merge, 2-frame temporal patches."""
    return dict(
        depth=2,
        hidden_size=hidden_size,
        num_heads=2,
        patch_size=patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
        **extra,
    )


class Qwen2VLFamily(VLMFamily):
    """Qwen2-VL chat models (`Qwen2VLForConditionalGeneration`)."""

    name: ClassVar[str] = "qwen2_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_vl",)
    model_class_name: ClassVar[str] = "Qwen2VLForConditionalGeneration"
    image_placeholder: ClassVar[str] = "<|image_pad|>"
    video_placeholder: ClassVar[str] = "<|video_pad|>"
    mm_token_types: ClassVar[dict[str, int]] = {"<|image_pad|>": 1, "<|video_pad|>": 2}
    special_tokens: ClassVar[tuple[str, ...]] = tuple(QWEN_SPECIAL)
    tiny_chat_template: ClassVar[str] = QWEN_TEMPLATE
    tiny_system_prompt: ClassVar[str] = SYSTEM_DEFAULT
    tiny_pixel_range: ClassVar[tuple[int, int]] = (56 * 56, 256 * 28 * 28)  # smaller than the real budget
    default_patch_size: ClassVar[int] = 14
    default_mean: ClassVar[list[float]] = OPENAI_CLIP_MEAN
    default_std: ClassVar[list[float]] = OPENAI_CLIP_STD
    default_min_pixels: ClassVar[int] = 56 * 56
    default_max_pixels: ClassVar[int] = 28 * 28 * 1280
    default_video_min_pixels: ClassVar[int] = 128 * 28 * 28  # transformers' Qwen2-VL video processor
    default_video_max_pixels: ClassVar[int] = 768 * 28 * 28

    # --- preprocessing settings (checkpoint's preprocessor_config.json, overridden by options) ---------
    @property
    def patch_size(self) -> int:
        """Side of one vision patch in pixels."""
        return int(self.preprocessor.get("patch_size", self.default_patch_size))

    @property
    def merge_size(self) -> int:
        """Patches merged per side into one language-model token."""
        return int(self.preprocessor.get("merge_size", 2))

    @property
    def temporal_patch_size(self) -> int:
        """Frames per temporal patch (a still image is repeated to fill one)."""
        return int(self.preprocessor.get("temporal_patch_size", 2))

    @property
    def resample(self) -> int:
        """PIL resampling filter of the resize (3: bicubic)."""
        return int(self.preprocessor.get("resample", 3))

    @property
    def mean(self) -> list[float]:
        """Per-channel normalisation mean."""
        return list(self.preprocessor.get("image_mean", self.default_mean))

    @property
    def std(self) -> list[float]:
        """Per-channel normalisation standard deviation."""
        return list(self.preprocessor.get("image_std", self.default_std))

    @staticmethod
    def _range(config: dict, default_min: int, default_max: int) -> tuple[int, int]:
        """(min, max) pixels from a preprocessor config: min_pixels/max_pixels, else size edges."""
        size = config.get("size") or {}
        lo = config.get("min_pixels", size.get("shortest_edge", default_min))
        hi = config.get("max_pixels", size.get("longest_edge", default_max))
        return int(lo), int(hi)

    def pixel_range(self, video: bool = False) -> tuple[int, int]:
        """(min_pixels, max_pixels) per image, or per video frame, after options override the checkpoint."""
        if video:
            lo, hi = self._range(
                self.preprocessor.get("video") or {}, self.default_video_min_pixels, self.default_video_max_pixels
            )
            lo, hi = self.options.video_min_pixels or lo, self.options.video_max_pixels or hi
        else:
            lo, hi = self._range(self.preprocessor, self.default_min_pixels, self.default_max_pixels)
            lo, hi = self.options.min_pixels or lo, self.options.max_pixels or hi
        if lo > hi:
            raise ValueError(f"min_pixels ({lo}) is larger than max_pixels ({hi}); adjust the pixel budget")
        return lo, hi

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """Size an image is resized to before patching."""
        lo, hi = self.pixel_range()
        return smart_resize(height, width, self.patch_size * self.merge_size, lo, hi)

    def video_target_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """Size each video frame is resized to (Qwen2/2.5-VL: a per-frame pixel range)."""
        lo, hi = self.pixel_range(video=True)
        return smart_resize(height, width, self.patch_size * self.merge_size, lo, hi)

    # --- images ---------------------------------------------------------------------------------------
    def encode_images(self, images: list[Image], device: torch.device | str = "cpu") -> list[EncodedVisual]:
        """Resize (PIL path or batched torch path), then normalise and patchify each size group at once."""
        resized: list[torch.Tensor | None] = [None] * len(images)
        tensor_groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            if img.pil is not None:
                h, w = self.target_size(img.pil.height, img.pil.width)
                resized[i] = resize_pil(img.pil, h, w, self.resample).to(device)
            else:
                t = img.tensor
                tensor_groups.setdefault((tuple(t.shape), t.dtype, t.device), []).append(i)
        for indices in tensor_groups.values():
            batch = torch.stack([images[i].tensor for i in indices]).to(device).permute(0, 3, 1, 2)
            h, w = self.target_size(batch.shape[2], batch.shape[3])
            for j, frame in zip(indices, resize_tensor(batch, h, w, self.resample)):
                resized[j] = frame
        out: list[EncodedVisual | None] = [None] * len(images)
        size_groups: dict[tuple, list[int]] = {}
        for i, frame in enumerate(resized):
            size_groups.setdefault(tuple(frame.shape), []).append(i)
        for indices in size_groups.values():
            clips = torch.stack([resized[i] for i in indices])[:, None]  # [n, T=1, 3, H, W]
            for i, encoded in zip(indices, self._encode_clips(clips, kind="image")):
                out[i] = encoded
        return out  # type: ignore[return-value]

    # --- video ----------------------------------------------------------------------------------------
    def sample_video(self, video: Video) -> tuple[torch.Tensor, list[int]]:
        """Frames resampled to the target fps and frame budget: ([T, H, W, 3], chosen indices)."""
        idx = sample_frame_indices(
            video.frames.shape[0], video.fps, self.options.fps, self.options.max_frames, self.temporal_patch_size
        )
        return video.frames[idx], idx

    def encode_video(self, video: Video, device: torch.device | str = "cpu") -> EncodedVisual:
        """Sample frames, resize them as a batch and patchify into temporal patches."""
        frames, idx = self.sample_video(video)
        frames = frames.to(device).permute(0, 3, 1, 2)
        h, w = self.video_target_size(frames.shape[0], frames.shape[2], frames.shape[3])
        resized = resize_tensor(frames, h, w, self.resample)
        encoded = self._encode_clips(resized[None], kind="video")[0]
        encoded.meta["fps"] = video.fps
        encoded.meta["frame_indices"] = idx
        sampled_fps = video.fps * len(idx) / video.frames.shape[0]  # below options.fps when max_frames caps it
        encoded.meta["second_per_grid"] = self.temporal_patch_size / sampled_fps
        return encoded

    # --- shared patching ------------------------------------------------------------------------------
    def _encode_clips(self, clips: torch.Tensor, kind: str) -> list[EncodedVisual]:
        """Normalise and patchify same-sized clips [n, T, 3, H, W] in [0, 1] (T=1 for images) in one op."""
        pixels = normalize(clips, self.mean, self.std)
        tp, ps, ms = self.temporal_patch_size, self.patch_size, self.merge_size
        n, t, c, h, w = pixels.shape
        still = t == 1  # images: one frame, repeated across the temporal patch after the permute (no copy)
        if not still and t % tp:  # videos: repeat the last frame up to a whole temporal patch
            pixels = torch.cat([pixels, pixels[:, -1:].expand(-1, tp - t % tp, -1, -1, -1)], dim=1)
            t = pixels.shape[1]
        step = 1 if still else tp
        gt, gh, gw = max(1, t // tp), h // ps, w // ps
        patches = pixels.reshape(n, gt, step, c, gh // ms, ms, ps, gw // ms, ms, ps)
        patches = patches.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
        if still:
            patches = patches.expand(*patches.shape[:7], tp, ps, ps)
        flat = patches.reshape(n, gt * gh * gw, c * tp * ps * ps)
        num_tokens = gt * gh * gw // (ms * ms)
        grid = torch.tensor([[gt, gh, gw]], dtype=torch.long)
        pieces = self.placeholder_pieces(kind, grid, num_tokens)
        return [EncodedVisual(kind, flat[i], pieces, num_tokens, grid) for i in range(n)]

    def placeholder_pieces(self, kind: str, grid: torch.Tensor, num_tokens: int, meta: dict | None = None) -> list:
        """Token ids that replace one `<|image_pad|>` / `<|video_pad|>` of the chat template."""
        token = self.image_placeholder if kind == "image" else self.video_placeholder
        return [[self.token_id(token)] * num_tokens]

    # --- model plumbing -------------------------------------------------------------------------------
    @property
    def visual_token_ids(self) -> set[int]:
        """The image and video pad ids."""
        return {self.token_id(self.image_placeholder), self.token_id(self.video_placeholder)}

    def model_inputs(self, visuals: list[EncodedVisual], dtype: torch.dtype) -> dict[str, Any]:
        """pixel_values / image_grid_thw and pixel_values_videos / video_grid_thw (+ time scale)."""
        inputs: dict[str, Any] = {}
        images = [v for v in visuals if v.kind == "image"]
        videos = [v for v in visuals if v.kind == "video"]
        if images:
            inputs["pixel_values"] = torch.cat([v.pixel_values for v in images]).to(dtype)
            inputs["image_grid_thw"] = torch.cat([v.grid_thw for v in images]).to(images[0].pixel_values.device)
        if videos:
            inputs["pixel_values_videos"] = torch.cat([v.pixel_values for v in videos]).to(dtype)
            inputs["video_grid_thw"] = torch.cat([v.grid_thw for v in videos]).to(videos[0].pixel_values.device)
            inputs.update(self.video_time_inputs(videos))
        return inputs

    def visual_features(
        self, model: Any, visuals: list[EncodedVisual], dtype: torch.dtype
    ) -> list[VisualFeatures] | None:
        """One vision-tower call per kind over all the visuals (the tower attends within each visual only)."""
        out: list[VisualFeatures | None] = [None] * len(visuals)
        for kind in ("image", "video"):
            index = [i for i, v in enumerate(visuals) if v.kind == kind]
            if not index:
                continue
            pixels = torch.cat([visuals[i].pixel_values for i in index]).to(dtype)
            grid = torch.cat([visuals[i].grid_thw for i in index]).to(pixels.device)
            tower = model.get_image_features if kind == "image" else model.get_video_features
            for i, features in zip(index, self.split_features(kind, tower(pixels, grid))):
                out[i] = features
        return out  # type: ignore[return-value]

    def split_features(self, kind: str, output: Any) -> list[VisualFeatures]:
        """Per-visual features from `get_image_features` / `get_video_features` (already split per visual)."""
        pooled = output.pooler_output if hasattr(output, "pooler_output") else output
        return [VisualFeatures(kind, embeds) for embeds in pooled]

    def video_time_inputs(self, videos: list[EncodedVisual]) -> dict[str, Any]:
        """Extra video timing inputs (none for Qwen2-VL)."""
        return {}

    def position_ids(self, model: Any, input_ids: torch.Tensor, visuals: list[EncodedVisual]) -> torch.Tensor:
        """[3, L] multimodal RoPE positions from the model's own `get_rope_index`."""
        # transformers' object layout: `get_rope_index` sits on the inner model in newer releases, else on the outer
        inner = model.model if hasattr(model, "model") and hasattr(model.model, "get_rope_index") else model
        ids = input_ids[None]
        grids = self.model_inputs(visuals, torch.float32) if visuals else {}
        kwargs = dict(
            image_grid_thw=grids.get("image_grid_thw"),
            video_grid_thw=grids.get("video_grid_thw"),
            second_per_grid_ts=grids.get("second_per_grid_ts"),
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=self.token_types(ids),
        )
        if kwargs["image_grid_thw"] is None and kwargs["video_grid_thw"] is None:
            return torch.arange(ids.shape[1], device=ids.device).expand(3, -1)
        positions, _ = call_with_supported(inner.get_rope_index, ids, **kwargs)
        return positions[:, 0]

    # --- tiny test checkpoint -------------------------------------------------------------------------
    @classmethod
    def tiny_text_config(cls, vocab_size: int, token_ids: dict) -> dict:
        """The tiny language model: 2 layers, multimodal RoPE over (t, h, w) = (2, 3, 3) frequency pairs."""
        return text_config(vocab_size, **token_ids, **mrope([2, 3, 3]))

    @classmethod
    def tiny_vision_config(cls) -> dict:
        """Qwen2-VL's vision tower at toy size (14 px patches)."""
        return qwen_vision_config(14, 64, embed_dim=32, mlp_ratio=2, in_chans=3)

    @classmethod
    def tiny_config(cls, tokenizer: Any) -> Any:
        """The family's config class around the tiny text and vision configs, Qwen's vision token ids set."""
        token_ids = chat_token_ids(tokenizer)
        return config_class(cls.model_class_name)(
            text_config=cls.tiny_text_config(padded_vocab(tokenizer), token_ids),
            vision_config=cls.tiny_vision_config(),
            image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
            video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
            tie_word_embeddings=False,
            **token_ids,
        )

    @classmethod
    def tiny_image_processor(cls) -> dict:
        """preprocessor_config.json in the real checkpoints' layout, with `tiny_pixel_range` as the budget."""
        lo, hi = cls.tiny_pixel_range
        return {
            **IMAGE_PROCESSING,
            "image_processor_type": "Qwen2VLImageProcessor",
            "min_pixels": lo,
            "max_pixels": hi,
            "size": {"shortest_edge": lo, "longest_edge": hi},
            "patch_size": cls.default_patch_size,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": list(cls.default_mean),
            "image_std": list(cls.default_std),
        }

    @classmethod
    def tiny_processor_files(cls) -> dict[str, dict]:
        """Qwen2-VL checkpoints ship one preprocessor_config.json."""
        return {"preprocessor_config.json": cls.tiny_image_processor()}


FAMILY = Qwen2VLFamily
