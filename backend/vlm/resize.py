"""Resizing shared by the VLM families: the checkpoint processors' size rules, in PIL and in torch.

Two paths produce the same target size:
- `resize_pil`: files and PIL images, resized exactly like transformers' PIL image processors (uint8 PIL
  image, the checkpoint's resampling filter), so pixel values match the processor bit for bit.
- `resize_tensor`: ComfyUI tensors, batched and differentiable (antialiased torch interpolation, which
  follows PIL's filters closely: mean absolute difference well below 1/255).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

# PIL resampling codes as stored in preprocessor_config.json ("resample": 3 means bicubic).
PIL_FILTERS = {0: PILImage.NEAREST, 1: PILImage.LANCZOS, 2: PILImage.BILINEAR, 3: PILImage.BICUBIC}
TORCH_MODES = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic"}


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's target size: both sides multiples of `factor`, area within [min_pixels, max_pixels]."""
    if min(height, width) < 1:
        raise ValueError(f"image has an empty side: {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"image aspect ratio {max(height, width) / min(height, width):.0f}:1 is above 200:1, which the "
            "model cannot take; crop the image"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return max(h_bar, factor), max(w_bar, factor)


def resize_pil(img: PILImage.Image, height: int, width: int, resample: int = 3) -> torch.Tensor:
    """Resize a PIL RGB image like transformers' PIL backend; returns float [3, H, W] in [0, 1]."""
    if (img.height, img.width) != (height, width):
        img = img.resize((width, height), resample=PIL_FILTERS.get(int(resample), PILImage.BICUBIC))
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def resize_tensor(images: torch.Tensor, height: int, width: int, resample: int = 3) -> torch.Tensor:
    """Differentiably resize float images [N, 3, H, W] in [0, 1] to (height, width), PIL-like."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    mode = TORCH_MODES.get(int(resample), "bicubic")
    kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    # Antialiased bicubic on CPU/CUDA needs float32; keep the caller's dtype on the way out.
    out = F.interpolate(images.float(), size=(height, width), mode=mode, **kwargs)
    return out.clamp(0.0, 1.0).to(images.dtype)


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(x - mean) / std per channel for [..., 3, H, W] float images, in float32."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return (images.float() - mean_t) / std_t


def sample_frame_indices(
    num_frames: int, video_fps: float, target_fps: float, max_frames: int, multiple: int
) -> list[int]:
    """Pick frame indices that resample a clip to `target_fps`, at most `max_frames`, a multiple of `multiple`."""
    wanted = int(round(num_frames / video_fps * target_fps)) if target_fps > 0 else num_frames
    wanted = max(multiple, min(wanted, max_frames, num_frames if num_frames >= multiple else multiple))
    wanted = max(multiple, (wanted // multiple) * multiple)
    if wanted == num_frames:
        return list(range(num_frames))
    return [int(round(x)) for x in np.linspace(0, num_frames - 1, wanted)]
