"""Qwen3-VL: 16 px patches (32x32 pixels per token), 0.5/0.5 normalisation, timestamped video frames."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..media import Video
from .base import EncodedVisual, VisualFeatures, accepts_argument
from .qwen2_vl import Qwen2VLFamily, qwen_vision_config
from .resize import smart_resize
from .tiny_config import mrope, text_config


class Qwen3VLFamily(Qwen2VLFamily):
    """Qwen3-VL chat models, dense and MoE (`Qwen3VLForConditionalGeneration`, `Qwen3VLMoe...`)."""

    name: ClassVar[str] = "qwen3_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_vl", "qwen3_vl_moe")
    model_class_name: ClassVar[str] = "Qwen3VLForConditionalGeneration"
    default_patch_size: ClassVar[int] = 16
    default_mean: ClassVar[list[float]] = [0.5, 0.5, 0.5]
    default_std: ClassVar[list[float]] = [0.5, 0.5, 0.5]
    default_min_pixels: ClassVar[int] = 65536
    default_max_pixels: ClassVar[int] = 16777216
    default_video_min_pixels: ClassVar[int] = 128 * 32 * 32
    default_video_max_pixels: ClassVar[int] = 768 * 32 * 32
    video_template: ClassVar[str] = "<|vision_start|><|video_pad|><|vision_end|>"
    tiny_system_prompt: ClassVar[str] = ""  # Qwen3-VL's template adds no default system prompt
    tiny_pixel_range: ClassVar[tuple[int, int]] = (64 * 32 * 32 // 16, 256 * 32 * 32)

    @property
    def placeholder_kinds(self) -> dict[str, str]:
        """The template's whole `<|vision_start|><|video_pad|><|vision_end|>` is replaced by timestamped frames."""
        return {self.video_template: "video", **super().placeholder_kinds}

    def video_target_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """Frame size; the checkpoint's video budget counts pixels over all frames (temporal patches)."""
        if self.options.video_min_pixels or self.options.video_max_pixels or "video" not in self.preprocessor:
            return super().video_target_size(num_frames, height, width)
        lo, hi = self.pixel_range(video=True)
        factor, tp = self.patch_size * self.merge_size, self.temporal_patch_size
        if height < factor or width < factor:
            scale = max(factor / height, factor / width)
            height, width = int(height * scale), int(width * scale)
        frames = max(tp, round(num_frames / tp) * tp)
        h, w = smart_resize(height, width, factor, 1, 1 << 62)
        if frames * h * w > hi:
            beta = math.sqrt(num_frames * height * width / hi)
            h = max(factor, math.floor(height / beta / factor) * factor)
            w = max(factor, math.floor(width / beta / factor) * factor)
        elif frames * h * w < lo:
            beta = math.sqrt(lo / (num_frames * height * width))
            h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
        return h, w

    def visual_features(
        self, model: Any, visuals: list[EncodedVisual], dtype: torch.dtype
    ) -> list[VisualFeatures] | None:
        """Qwen2-VL's batched tower calls, keeping the deepstack features; None when this transformers release
        takes no precomputed features (`mm_encoder_outputs`), since `inputs_embeds` alone would drop deepstack."""
        if not accepts_argument(model.forward, "mm_encoder_outputs"):
            return None
        return super().visual_features(model, visuals, dtype)

    def split_features(self, kind: str, output: Any) -> list[VisualFeatures]:
        """Each visual's merged features plus its slice of every deepstack layer's features."""
        layers = output.deepstack_features or []
        return [
            VisualFeatures(kind, embeds, [layer[i] for layer in layers])
            for i, embeds in enumerate(output.pooler_output)
        ]

    def feature_inputs(self, model: Any, input_ids: torch.Tensor, features: list[VisualFeatures]) -> dict[str, Any]:
        """The model's own precomputed-features input (`mm_encoder_outputs`): it places the features and joins the
        image and video deepstack features at the visual tokens exactly as when it runs the tower itself."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        outputs = {}
        for kind in ("image", "video"):
            chosen = [f for f in features if f.kind == kind]
            if chosen:
                layers = len(chosen[0].deepstack)
                outputs[kind] = BaseModelOutputWithDeepstackFeatures(
                    pooler_output=tuple(f.embeds for f in chosen),
                    deepstack_features=[tuple(f.deepstack[k] for f in chosen) for k in range(layers)],
                )
        return {"input_ids": input_ids, "mm_encoder_outputs": outputs} if outputs else {"input_ids": input_ids}

    @classmethod
    def model_class_for(cls, model_type: str) -> str:
        """The MoE variant has its own class."""
        return "Qwen3VLMoeForConditionalGeneration" if model_type == "qwen3_vl_moe" else cls.model_class_name

    def encode_video(self, video: Video, device: torch.device | str = "cpu") -> EncodedVisual:
        """Qwen2-VL's video patches, with per-temporal-patch timestamps written into the prompt."""
        encoded = super().encode_video(video, device)
        idx, tp = encoded.meta["frame_indices"], self.temporal_patch_size
        idx = idx + [idx[-1]] * (-len(idx) % tp)
        stamps = [(idx[i] + idx[i + tp - 1]) / 2 / video.fps for i in range(0, len(idx), tp)]
        per_frame = int(encoded.grid_thw[0, 1] * encoded.grid_thw[0, 2]) // self.merge_size**2
        start, end = self.token_id("<|vision_start|>"), self.token_id("<|vision_end|>")
        pad = self.token_id(self.video_placeholder)
        pieces: list = []
        for stamp in stamps:
            pieces.append(f"<{stamp:.1f} seconds>")
            pieces.append([start] + [pad] * per_frame + [end])
        encoded.pieces = pieces
        return encoded

    # --- tiny test checkpoint -------------------------------------------------------------------------
    @classmethod
    def tiny_text_config(cls, vocab_size: int, token_ids: dict) -> dict:
        """The tiny language model with 16-wide heads and interleaved multimodal RoPE."""
        return text_config(vocab_size, head_dim=16, **token_ids, **mrope([4, 2, 2], mrope_interleaved=True))

    @classmethod
    def tiny_vision_config(cls) -> dict:
        """Qwen3-VL's vision tower at toy size (16 px patches, learned positions, one deepstack layer)."""
        return qwen_vision_config(
            16, 32, intermediate_size=64, out_hidden_size=64, num_position_embeddings=256, deepstack_visual_indexes=[1]
        )

    @classmethod
    def tiny_image_processor(cls) -> dict:
        """Qwen3-VL checkpoints state the pixel budget only as `size` edges (no min_pixels / max_pixels)."""
        pixels = super().tiny_image_processor()
        return {k: v for k, v in pixels.items() if k not in ("min_pixels", "max_pixels")}

    @classmethod
    def tiny_processor_files(cls) -> dict[str, dict]:
        """Qwen3-VL checkpoints also ship a video budget counted over all frames."""
        video = {
            "size": {"shortest_edge": 4096, "longest_edge": 25165824},
            "patch_size": cls.default_patch_size,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "fps": 2,
            "image_mean": list(cls.default_mean),
            "image_std": list(cls.default_std),
        }
        return {**super().tiny_processor_files(), "video_preprocessor_config.json": video}


FAMILY = Qwen3VLFamily
