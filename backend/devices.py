"""Device and dtype names users type (auto, cpu, cuda:1, bf16, ...) resolved to torch's, in one place for
every loader: reward models, generators and trainers."""

from __future__ import annotations

import importlib.util

import torch

DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")  # the names offered in flags and node inputs
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# The kernel package each attention implementation imports, and how it is installed (CUDA only).
ATTENTION_PACKAGES = {
    "flash_attention_2": ("flash_attn", "`pip install flash-attn`"),
    "flash_attention_3": ("flash_attn_interface", "FlashAttention 3, built from its hopper/ folder"),
}


def check_attention(name: str | None) -> None:
    """Refuse an attention implementation that is unknown, or whose kernel package is not installed."""
    if name is None:
        return
    if name not in ATTENTION:
        raise ValueError(f"attention {name!r} is not one of {', '.join(ATTENTION)}")
    package, install = ATTENTION_PACKAGES.get(name, (None, ""))
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(
            f"attention {name!r} needs the {package} package, which is not installed (CUDA only: {install}); "
            "use sdpa instead"
        )


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """'auto' -> bf16 on CUDA with bf16 support, else fp32; names like 'bf16' -> torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if str(dtype).lower() not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of auto, bf16, fp16, fp32")
    return DTYPES[str(dtype).lower()]


def resolve_device(device: str | None) -> str:
    """'auto'/None -> cuda if available, else mps, else cpu; validates explicit names."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device name (cpu, cuda, cuda:1, mps)") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use --device cpu")
    return str(parsed)


def resolve_device_and_dtype(device: str | None, dtype: str | torch.dtype | None) -> tuple[str, torch.dtype]:
    """Both at once: the device first, since 'auto' dtype depends on it."""
    resolved = resolve_device(device)
    return resolved, resolve_dtype(dtype, resolved)
