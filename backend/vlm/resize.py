"""Resizing shared by the VLM families: the checkpoint processors' size rules, in PIL and in torch.

Two paths produce the same target size:
- `resize_pil`: files and PIL images, resized exactly like transformers' PIL image processors (uint8 PIL
  image, the checkpoint's resampling filter), so pixel values match the processor bit for bit.
- `resize_tensor`: ComfyUI tensors, batched and differentiable: PIL's separable resampling rebuilt in torch
  (the same per-axis filter weights, horizontal pass then vertical pass, values clipped to [0, 1] after each
  pass like PIL's uint8 clipping). PIL also rounds to uint8 after each pass and uses fixed-point weights; the
  tensor path stays in float32, so on uint8 inputs the two agree within about 1/255 per pixel (the rounding),
  up- and downsampling alike. The weights themselves are PIL's to the last bit (`resample_weights`).
  Nearest (code 0) stays torch's nearest interpolation, which can pick different source pixels than PIL's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

# PIL resampling codes as stored in preprocessor_config.json ("resample": 3 means bicubic).
PIL_FILTERS = {
    0: PILImage.NEAREST,
    1: PILImage.LANCZOS,
    2: PILImage.BILINEAR,
    3: PILImage.BICUBIC,
    4: PILImage.BOX,
    5: PILImage.HAMMING,
}


def _box(x: np.ndarray) -> np.ndarray:
    """PIL's box filter: 1 on (-0.5, 0.5]."""
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


def _triangle(x: np.ndarray) -> np.ndarray:
    """PIL's bilinear (triangle) filter."""
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _hamming(x: np.ndarray) -> np.ndarray:
    """PIL's Hamming-windowed sinc on (-1, 1)."""
    x = np.abs(x)
    # PIL's window constants are single-precision literals; using them keeps its weights to the last bit.
    return np.where(x < 1.0, np.sinc(x) * (np.float32(0.54) + np.float32(0.46) * np.cos(np.pi * x)), 0.0)


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """PIL's bicubic (Keys) filter with a = -0.5 (torch's bicubic uses -0.75)."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _lanczos(x: np.ndarray) -> np.ndarray:
    """PIL's Lanczos filter: sinc(x) * sinc(x / 3) on (-3, 3)."""
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


# PIL code -> (filter, support in input pixels at scale 1); code 0 (nearest) is not a weighted filter.
FILTERS: dict[int, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    1: (_lanczos, 3.0),
    2: (_triangle, 1.0),
    3: (_bicubic, 2.0),
    4: (_box, 0.5),
    5: (_hamming, 1.0),
}


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


def resample_weights(in_size: int, out_size: int, resample: int = 3) -> np.ndarray:
    """PIL's per-axis resampling weights as an [out_size, in_size] float64 matrix, each row summing to 1."""
    if min(in_size, out_size) < 1:
        raise ValueError(f"cannot resize {in_size} pixels to {out_size}: both sizes must be at least 1")
    kernel, base_support = FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # downsampling widens the filter to antialias
    support = base_support * filterscale
    inv_filterscale = 1.0 / filterscale  # PIL multiplies by the reciprocal; same here, to the last bit
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        row = kernel((taps - center + 0.5) * inv_filterscale)
        total = row.sum()
        weights[i, lo:hi] = row / total if total != 0 else row
    return weights


@lru_cache(maxsize=64)
def _weights_tensor(in_size: int, out_size: int, resample: int, device: torch.device) -> torch.Tensor:
    """`resample_weights` as a float32 tensor on `device`, cached per (sizes, filter, device)."""
    return torch.from_numpy(resample_weights(in_size, out_size, resample)).to(device=device, dtype=torch.float32)


def resize_tensor(images: torch.Tensor, height: int, width: int, resample: int = 3) -> torch.Tensor:
    """Differentiably resize float images [N, 3, H, W] in [0, 1] to (height, width) with PIL's filters."""
    in_h, in_w = images.shape[-2:]
    if (in_h, in_w) == (height, width):
        return images
    code = int(resample) if int(resample) in PIL_FILTERS else 3  # unknown codes: bicubic, as `resize_pil`
    if code == 0:
        return F.interpolate(images.float(), size=(height, width), mode="nearest").to(images.dtype)
    out = images.float()
    if in_w != width:  # horizontal pass first, like PIL: [..., H, W] @ [W, width]
        out = (out @ _weights_tensor(in_w, width, code, images.device).T).clamp(0.0, 1.0)
    if in_h != height:  # then vertical: [height, H] @ [..., H, width]
        out = (_weights_tensor(in_h, height, code, images.device) @ out).clamp(0.0, 1.0)
    return out.to(images.dtype)


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
