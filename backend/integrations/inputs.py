"""What outside RL code hands a reward function, checked and turned into what `RewardModel` takes.

Images: a uint8 or float array / tensor [B, H, W, 3] or [B, 3, H, W] (uint8 in 0..255, float in [0, 1]), or a
list of PIL images (or file paths). Prompts: one string per image (or one shared string). Judges: a loaded
`RewardModel`, a `RewardClient`, a checkpoint path / hub id, or the http(s) URL of a `rewarddance serve`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image as PILImage

from ..media import MediaError

RANGE_SLACK = 1e-3  # float images may overshoot [0, 1] by rounding; beyond this they are refused


def image_batch(images: Any, name: str = "images") -> torch.Tensor | list:
    """`images` as an IMAGE tensor [B, H, W, 3] float32 in [0, 1] on the CPU, or a list of PIL images / paths."""
    if isinstance(images, (list, tuple)):
        return image_list(images, name)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images) if images.flags.writeable else images.copy())
    if not isinstance(images, torch.Tensor):
        raise MediaError(
            f"{name}: expected a uint8/float array or tensor [B, H, W, 3] or [B, 3, H, W], or a list of PIL "
            f"images, got {type(images).__name__}"
        )
    return channels_last(as_unit_float(images.detach(), name), name)


def image_list(images: Sequence[Any], name: str) -> list:
    """A list of PIL images or file paths, checked item by item."""
    if not images:
        raise MediaError(f"{name}: no images given; pass at least one")
    for i, item in enumerate(images):
        if not isinstance(item, (PILImage.Image, str, os.PathLike)):
            raise MediaError(
                f"{name}[{i}]: expected a PIL image or a file path, got {type(item).__name__}; pass a list of PIL "
                "images, or the whole batch as one array / tensor [B, H, W, 3] or [B, 3, H, W]"
            )
    return list(images)


def as_unit_float(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) values as float32 in [0, 1] on the CPU; other dtypes are refused."""
    if images.dtype == torch.uint8:
        return images.cpu().float() / 255.0
    if not images.is_floating_point():
        raise MediaError(f"{name}: expected uint8 (0..255) or float ([0, 1]) values, got dtype {images.dtype}")
    images = images.cpu().float()
    if images.numel() and not torch.isfinite(images).all():
        raise MediaError(f"{name}: contains NaN or infinite values")
    if images.numel() and (images.min() < -RANGE_SLACK or images.max() > 1 + RANGE_SLACK):
        raise MediaError(
            f"{name}: float images must be in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}]; "
            "map [-1, 1] decoder output with (x / 2 + 0.5).clamp(0, 1)"
        )
    return images.clamp(0, 1)


def channels_last(images: torch.Tensor, name: str) -> torch.Tensor:
    """[B, 3, H, W] or [B, H, W, 3] as a contiguous [B, H, W, 3] (channels last when both dims are 3)."""
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
        raise MediaError(
            f"{name}: expected a batch [B, H, W, 3] or [B, 3, H, W] of RGB images, got shape {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise MediaError(f"{name}: no images given; pass at least one")
    if images.shape[-1] != 3:
        images = images.permute(0, 2, 3, 1)
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise MediaError(f"{name}: images have an empty side, shape {tuple(images.shape)}")
    return images.contiguous()


def reference_image(ref: Any, name: str = "reference") -> Any:
    """One reference as `RewardModel.compare` takes it: a PIL image or path as is, an array / tensor
    [H, W, 3] or [3, H, W] (uint8 or float in [0, 1]) as an IMAGE tensor [H, W, 3]."""
    if isinstance(ref, (PILImage.Image, str, os.PathLike)):
        return ref
    if isinstance(ref, (np.ndarray, torch.Tensor)) and ref.ndim == 3:
        return image_batch(ref[None], name)[0]
    shape = f" of shape {tuple(ref.shape)}" if isinstance(ref, (np.ndarray, torch.Tensor)) else ""
    raise MediaError(
        f"{name}: expected a PIL image, a file path or an image array [H, W, 3] or [3, H, W], got "
        f"{type(ref).__name__}{shape}"
    )


def batch_size_of(images: torch.Tensor | list) -> int:
    """How many images a converted batch holds."""
    return len(images) if isinstance(images, list) else int(images.shape[0])


def take(images: torch.Tensor | list, indices: Sequence[int]) -> torch.Tensor | list:
    """The images at `indices`, in that order, in the batch's own form."""
    if isinstance(images, list):
        return [images[i] for i in indices]
    return images[list(indices)]


def prompt_list(prompts: Any, n: int, name: str = "prompts") -> list[str]:
    """One prompt per image: a single string is shared; a sequence must hold `n` strings."""
    if isinstance(prompts, str):
        return [prompts] * n
    if isinstance(prompts, np.ndarray):
        prompts = prompts.tolist()
    if not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name}: expected a list of strings (one per image), got {type(prompts).__name__}")
    if len(prompts) != n:
        raise ValueError(f"{name}: got {len(prompts)} prompts for {n} images; pass one prompt per image")
    return list(prompts)


def metadata_list(metadata: Any, n: int, name: str = "metadata") -> list[Mapping]:
    """Per-image metadata dicts: a sequence of `n` dicts (Flow-GRPO's prompt metadata), one dict shared, or None."""
    if metadata is None:
        return [{}] * n
    if isinstance(metadata, Mapping):
        return [metadata] * n
    if not isinstance(metadata, Sequence) or isinstance(metadata, (str, bytes)):
        raise ValueError(f"{name}: expected a list of dicts (one per image) or one dict, got {type(metadata).__name__}")
    if len(metadata) != n:
        raise ValueError(f"{name}: got {len(metadata)} entries for {n} images; pass one dict per image")
    for i, item in enumerate(metadata):
        if not isinstance(item, Mapping):
            raise ValueError(f"{name}[{i}]: expected a dict, got {type(item).__name__}")
    return list(metadata)


def is_url(judge: str) -> bool:
    """True when `judge` is written as a URL (scheme://...) rather than a checkpoint path or hub id."""
    return "://" in judge


def check_url(url: str, name: str = "model") -> str:
    """An http(s)://HOST[:PORT] URL of a `rewarddance serve`, else ValueError naming `name`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"{name}: unsupported URL scheme {parts.scheme!r} in {url!r}; pass http://HOST:PORT of a `rewarddance "
            "serve`, or a checkpoint path"
        )
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ValueError(f"{name}: the port of {url!r} is not a number; pass http://HOST:PORT") from None
    if not parts.hostname:
        raise ValueError(f"{name}: {url!r} names no host; pass http://HOST:PORT of a `rewarddance serve`")
    return url


def load_judge(judge: Any, server_model: str | None, token: str | None, loading: dict[str, Any]) -> Any:
    """A RewardModel or RewardClient from what the caller passed (loaded models and clients as they are)."""
    if isinstance(judge, os.PathLike):
        judge = os.fspath(judge)
    if isinstance(judge, str):
        if is_url(judge):
            if loading:
                raise ValueError(f"{', '.join(sorted(loading))}: loading options apply to a local model, not a URL")
            from ..client import RewardClient

            return RewardClient(check_url(judge), token=token, model=server_model)
        from ..reward_model import RewardModel

        return RewardModel.from_pretrained(judge, **loading)
    if not all(callable(getattr(judge, m, None)) for m in ("score", "compare", "tournament")):
        raise ValueError(
            f"model: expected a RewardModel, a RewardClient, a checkpoint path or a server URL, got "
            f"{type(judge).__name__}"
        )
    if loading:
        raise ValueError(f"{', '.join(sorted(loading))}: loading options apply only when model is a path")
    return judge
