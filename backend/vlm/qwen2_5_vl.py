"""Qwen2.5-VL: Qwen2-VL's preprocessing plus absolute time in video RoPE (`second_per_grid_ts`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import EncodedVisual
from .qwen2_vl import Qwen2VLFamily


class Qwen2_5_VLFamily(Qwen2VLFamily):
    """Qwen2.5-VL chat models (`Qwen2_5_VLForConditionalGeneration`)."""

    name: ClassVar[str] = "qwen2_5_vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    model_class_name: ClassVar[str] = "Qwen2_5_VLForConditionalGeneration"
    default_max_pixels: ClassVar[int] = 12845056

    def video_time_inputs(self, videos: list[EncodedVisual]) -> dict[str, Any]:
        """Seconds covered by one temporal patch of each video."""
        seconds = [float(v.meta["second_per_grid"]) for v in videos]
        return {"second_per_grid_ts": torch.tensor(seconds, device=videos[0].pixel_values.device)}

    @classmethod
    def tiny_vision_config(cls) -> dict:
        """Qwen2-VL's toy tower with Qwen2.5-VL's MLP block, windowed attention and absolute time."""
        return dict(
            super().tiny_vision_config(),
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=64,
            window_size=112,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        )


FAMILY = Qwen2_5_VLFamily
