"""Qwen3-VL: 16 px patches (32x32 pixels per token), 0.5/0.5 normalisation, timestamped video frames."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..media import Video
from .base import EncodedVisual
from .qwen2_vl import Qwen2VLFamily


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
    default_video_max_pixels: ClassVar[int] = 256 * 32 * 32

    def model_class_for(self, model_type: str) -> str:
        """The MoE variant has its own class."""
        return "Qwen3VLMoeForConditionalGeneration" if model_type == "qwen3_vl_moe" else self.model_class_name

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


FAMILY = Qwen3VLFamily
