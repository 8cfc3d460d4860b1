"""InternVL (Hugging Face format, `InternVLForConditionalGeneration`): 448 px tiles, 256 tokens per tile.

Images are resized to a fixed tile (optionally a grid of tiles picked by aspect ratio, plus a
thumbnail), each tile becomes `image_seq_length` `<IMG_CONTEXT>` tokens between `<img>` and `</img>`.
Videos are frames, each one tile, written as `Frame1: <img>...</img>` lines.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..media import Image, Video
from .base import EncodedVisual, VisualFeatures, VLMFamily
from .resize import normalize, resize_pil, resize_tensor, sample_frame_indices
from .tiny_config import IMAGE_PROCESSING, chat_token_ids, padded_vocab, text_config

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

INTERNVL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]

# The tiny checkpoint's own template in InternVL's chat format: visuals render as the placeholder the scorer expands.
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


def tile_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """All (columns, rows) grids with a tile count in [min_tiles, max_tiles], fewest tiles first."""
    grids = [
        (c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1) if min_tiles <= c * r <= max_tiles
    ]
    return sorted(grids, key=lambda g: g[0] * g[1])


def best_tile_grid(height: int, width: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(columns, rows) whose aspect ratio is closest to the image's; ties go to more tiles while useful."""
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in tile_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


class InternVLFamily(VLMFamily):
    """InternVL 2.5 / 3 / 3.5 checkpoints in Hugging Face format."""

    name: ClassVar[str] = "internvl"
    model_types: ClassVar[tuple[str, ...]] = ("internvl",)
    model_class_name: ClassVar[str] = "InternVLForConditionalGeneration"
    image_placeholder: ClassVar[str] = "<IMG_CONTEXT>"
    video_placeholder: ClassVar[str] = "<video>"
    special_tokens: ClassVar[tuple[str, ...]] = tuple(INTERNVL_SPECIAL)
    tiny_chat_template: ClassVar[str] = INTERNVL_TEMPLATE
    # InternVL's processor reads its image tokens by these names from tokenizer_config.json.
    tiny_token_names: ClassVar[dict[str, str]] = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }

    @property
    def tile_size(self) -> int:
        """Side of one square tile in pixels."""
        size = self.preprocessor.get("size") or {}
        return int(size.get("height", 448))

    @property
    def tokens_per_tile(self) -> int:
        """`<IMG_CONTEXT>` tokens per tile (the processor's image_seq_length, else from the vision config)."""
        if "image_seq_length" in self.preprocessor:
            return int(self.preprocessor["image_seq_length"])
        vision = self.config.vision_config
        image = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
        patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
        return int((image // patch) ** 2 * self.config.downsample_ratio**2)

    @property
    def resample(self) -> int:
        """PIL resampling filter of the resize (3: bicubic)."""
        return int(self.preprocessor.get("resample", 3))

    def max_tiles(self) -> int:
        """Tile budget: `max_pixels` (if set) caps the number of tiles, else the checkpoint's max_patches."""
        tiles = int(self.preprocessor.get("max_patches", 12))
        if self.options.max_pixels is not None:
            tiles = max(1, min(tiles, self.options.max_pixels // (self.tile_size**2)))
        return tiles

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """(columns, rows) of tiles for an image. InternVL's processor always crops images to patches,
        whatever the image processor's own `crop_to_patches` says (real checkpoints ship `false` there)."""
        min_tiles = int(self.preprocessor.get("min_patches", 1))
        return best_tile_grid(height, width, self.tile_size, min_tiles, max(min_tiles, self.max_tiles()))

    # --- images ---------------------------------------------------------------------------------------
    def encode_images(self, images: list[Image], device: torch.device | str = "cpu") -> list[EncodedVisual]:
        """Tile, resize and normalise each image."""
        return [self._encode_image(img, device) for img in images]

    def _encode_image(self, img: Image, device: torch.device | str) -> EncodedVisual:
        height, width = img.size
        cols, rows = self.grid_for(height, width)
        tile = self.tile_size
        if img.pil is not None:
            canvas = resize_pil(img.pil, rows * tile, cols * tile, self.resample).to(device)[None]
            thumb = resize_pil(img.pil, tile, tile, self.resample).to(device)[None] if cols * rows > 1 else None
        else:
            source = img.tensor.to(device).permute(2, 0, 1)[None]
            canvas = resize_tensor(source, rows * tile, cols * tile, self.resample)
            thumb = resize_tensor(source, tile, tile, self.resample) if cols * rows > 1 else None
        tiles = [
            canvas[0, :, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)
        ]
        if thumb is not None:
            tiles.append(thumb[0])
        pixels = normalize(torch.stack(tiles), self.mean, self.std)
        n = pixels.shape[0] * self.tokens_per_tile
        pieces = [[self.token_id("<img>")] + [self.token_id(self.image_placeholder)] * n + [self.token_id("</img>")]]
        return EncodedVisual("image", pixels, pieces, n, meta={"tiles": pixels.shape[0]})

    # --- video ----------------------------------------------------------------------------------------
    def encode_video(self, video: Video, device: torch.device | str = "cpu") -> EncodedVisual:
        """Each sampled frame becomes one tile, written as a `FrameN: <img>...</img>` line."""
        idx = sample_frame_indices(video.frames.shape[0], video.fps, self.options.fps, self.options.max_frames, 1)
        frames = video.frames[idx].to(device).permute(0, 3, 1, 2)
        pixels = normalize(resize_tensor(frames, self.tile_size, self.tile_size, self.resample), self.mean, self.std)
        ctx, start, end = self.token_id(self.image_placeholder), self.token_id("<img>"), self.token_id("</img>")
        pieces: list = []
        for i in range(len(idx)):
            pieces.append(("\n" if i else "") + f"Frame{i + 1}: ")
            pieces.append([start] + [ctx] * self.tokens_per_tile + [end])
        n = len(idx) * self.tokens_per_tile
        return EncodedVisual(
            "video", pixels, pieces, n, meta={"tiles": len(idx), "frame_indices": idx, "fps": video.fps}
        )

    @property
    def mean(self) -> list[float]:
        """Per-channel normalisation mean."""
        return list(self.preprocessor.get("image_mean", IMAGENET_MEAN))

    @property
    def std(self) -> list[float]:
        """Per-channel normalisation standard deviation."""
        return list(self.preprocessor.get("image_std", IMAGENET_STD))

    # --- model plumbing -------------------------------------------------------------------------------
    @property
    def visual_token_ids(self) -> set[int]:
        """`<IMG_CONTEXT>`, `<img>` and `</img>` ids."""
        return {self.token_id(self.image_placeholder), self.token_id("<img>"), self.token_id("</img>")}

    @property
    def feature_token_ids(self) -> set[int]:
        """`<IMG_CONTEXT>`: the projected tile features replace these; `<img>` / `</img>` stay text."""
        return {self.token_id(self.image_placeholder)}

    def visual_features(
        self, model: Any, visuals: list[EncodedVisual], dtype: torch.dtype
    ) -> list[VisualFeatures] | None:
        """All tiles and frames through the ViT and its projector in one call, split back per visual."""
        if not visuals:
            return []
        pixels = torch.cat([v.pixel_values for v in visuals]).to(dtype)
        output = model.get_image_features(pixel_values=pixels)
        tiles = output.pooler_output if hasattr(output, "pooler_output") else output  # [tiles, tokens, hidden]
        per_visual = torch.split(tiles, [v.pixel_values.shape[0] for v in visuals])
        return [VisualFeatures(v.kind, t.reshape(-1, t.shape[-1])) for v, t in zip(visuals, per_visual)]

    def model_inputs(self, visuals: list[EncodedVisual], dtype: torch.dtype) -> dict[str, Any]:
        """All tiles and frames, in order of appearance, as one `pixel_values` tensor."""
        if not visuals:
            return {}
        return {"pixel_values": torch.cat([v.pixel_values for v in visuals]).to(dtype)}

    # --- tiny test checkpoint -------------------------------------------------------------------------
    @classmethod
    def tiny_config(cls, tokenizer: Any) -> Any:
        """InternVL's config: a 2-layer 224 px ViT (64 tokens per tile) over a 2-layer Qwen2 language model."""
        import transformers

        vision = dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=[224, 224],
            patch_size=[14, 14],
        )
        text = dict(text_config(padded_vocab(tokenizer), **chat_token_ids(tokenizer)), model_type="qwen2")
        return transformers.InternVLConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=tokenizer.convert_tokens_to_ids(cls.image_placeholder),
            downsample_ratio=0.5,
            image_seq_length=64,
        )

    @classmethod
    def tiny_processor_files(cls) -> dict[str, dict]:
        """The tile processor's settings (224 px tiles, up to 4 plus a thumbnail) and the tokens per tile."""
        tiles = {
            **IMAGE_PROCESSING,
            "image_processor_type": "GotOcr2ImageProcessor",
            "size": {"height": 224, "width": 224},
            "crop_to_patches": True,
            "min_patches": 1,
            "max_patches": 4,
            "image_mean": list(IMAGENET_MEAN),
            "image_std": list(IMAGENET_STD),
        }
        return {"preprocessor_config.json": tiles, "processor_config.json": {"image_seq_length": 64}}


FAMILY = InternVLFamily
