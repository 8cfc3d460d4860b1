"""LoRA files out of a trained network: ComfyUI's format (loads in the stock LoraLoader /
LoraLoaderModelOnly at the intended strength) and a PEFT adapter directory for diffusers users.

ComfyUI keys per family (`<key>.lora_down.weight`, `<key>.lora_up.weight`, `<key>.alpha`; the alpha key makes
ComfyUI apply alpha / rank):
- SD 1.x / SDXL diffusers UNet: kohya names `lora_unet_<module with dots as underscores>`;
- SD3 / Flux transformers: `transformer.<diffusers module>`;
- Wan: `diffusion_model.<original Wan module>` (diffusers' attn1/attn2/ffn names mapped back);
- a model trained inside ComfyUI (its own module names): `diffusion_model.<module>`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from .lora import LoraSpec, add_lora, load_lora_state_dict, lora_modules, lora_state_dict, network_family

WAN_NAMES = [
    (r"\.attn1\.to_q$", ".self_attn.q"),
    (r"\.attn1\.to_k$", ".self_attn.k"),
    (r"\.attn1\.to_v$", ".self_attn.v"),
    (r"\.attn1\.to_out\.0$", ".self_attn.o"),
    (r"\.attn2\.to_q$", ".cross_attn.q"),
    (r"\.attn2\.to_k$", ".cross_attn.k"),
    (r"\.attn2\.to_v$", ".cross_attn.v"),
    (r"\.attn2\.to_out\.0$", ".cross_attn.o"),
    (r"\.ffn\.net\.0\.proj$", ".ffn.0"),
    (r"\.ffn\.net\.2$", ".ffn.2"),
]


def comfyui_key(module: str, family: str) -> str:
    """The ComfyUI LoRA key prefix of one adapted module."""
    if family == "unet":
        return "lora_unet_" + module.replace(".", "_")
    if family in ("sd3", "flux"):
        return "transformer." + module
    if family == "wan":
        for pattern, original in WAN_NAMES:
            if re.search(pattern, module):
                return "diffusion_model." + re.sub(pattern, original, module)
        raise ValueError(
            f"Wan module {module!r} has no original (ComfyUI) name here; train attention/ffn projections only"
        )
    if family.startswith("comfy"):
        return "diffusion_model." + module
    return module  # the tiny model: its own names


def comfyui_state_dict(net: nn.Module, family: str | None = None) -> dict[str, torch.Tensor]:
    """The adapters of `net` as a ComfyUI LoRA state dict (alpha written so the strength is right)."""
    family = family or network_family(net)
    out = {}
    for module, (down, up, scale) in lora_modules(net).items():
        key = comfyui_key(module, family)
        rank = down.shape[0]
        out[f"{key}.lora_down.weight"] = down.contiguous()
        out[f"{key}.lora_up.weight"] = up.contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(scale * rank))
    if not out:
        raise ValueError("the network has no LoRA adapters to export")
    return out


def save_comfyui_lora(
    net: nn.Module, path: str | Path, family: str | None = None, metadata: dict | None = None
) -> Path:
    """Write `net`'s adapters as a ComfyUI LoRA .safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    save_file(comfyui_state_dict(net, family), str(path), metadata={"format": "rewarddance-lora", **meta})
    return path


def save_peft_adapter(
    net: nn.Module, spec: LoraSpec, directory: str | Path, targets: list[str] | str | None = None
) -> Path:
    """A PEFT adapter directory (adapter_config.json + adapter_model.safetensors), as PeftModel.save_pretrained writes."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    modules = sorted(lora_modules(net))
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=targets or spec.targets or modules)
    config.save_pretrained(str(directory))
    state = {f"base_model.model.{k}": v for k, v in lora_state_dict(net).items()}
    save_file(state, str(directory / "adapter_model.safetensors"))
    return directory


def load_peft_adapter(net: nn.Module, directory: str | Path) -> list[nn.Parameter]:
    """Add the adapters of a PEFT directory to a fresh network and load their weights."""
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg = json.loads((directory / "adapter_config.json").read_text())
    params = add_lora(net, LoraSpec(int(cfg["r"]), float(cfg["lora_alpha"]), cfg["target_modules"]))
    state = {
        k.removeprefix("base_model.model."): v
        for k, v in load_file(str(directory / "adapter_model.safetensors")).items()
    }
    load_lora_state_dict(net, state)
    return params
