"""LoRA adapters on a generator's denoiser network, through peft: add, switch off (the frozen reference
policy for KL, no second copy of the weights), read and load their weights."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..dependencies import require

# Default target modules per network family: attention projections (and feed-forward where the recipes train it).
DEFAULT_TARGETS = {
    "unet": ["to_q", "to_k", "to_v", "to_out.0"],  # SD1.x / SDXL (diffusers names)
    "sd3": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"],
    "flux": [
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_add_out",
        "ff.net.0.proj",
        "ff.net.2",
        "proj_mlp",
        "proj_out",
    ],
    "wan": ["to_q", "to_k", "to_v", "to_out.0"],
    "comfy_unet": ["to_q", "to_k", "to_v", "to_out.0"],  # ComfyUI's SD1.x/SDXL module names
    # ComfyUI's own transformer module names (models loaded by ComfyUI's checkpoint/UNet loaders)
    "comfy_mmdit": ["attn.qkv", "attn.proj"],  # SD3 / SD3.5 joint blocks (x_block and context_block)
    "comfy_flux": [
        "img_attn.qkv",
        "img_attn.proj",
        "txt_attn.qkv",
        "txt_attn.proj",
        "img_mlp.0",
        "img_mlp.2",
        "txt_mlp.0",
        "txt_mlp.2",
        "linear1",
        "linear2",
    ],
    "comfy_wan": [
        "self_attn.q",
        "self_attn.k",
        "self_attn.v",
        "self_attn.o",
        "cross_attn.q",
        "cross_attn.k",
        "cross_attn.v",
        "cross_attn.o",
        "ffn.0",
        "ffn.2",
    ],
    "tiny": ["inp", "blocks.0", "blocks.1", "blocks.2", "embed", "out"],
}


@dataclass
class LoraSpec:
    """Rank, alpha and which submodules get adapters (peft `target_modules`: names or a regex)."""

    rank: int = 16
    alpha: float = 32.0
    targets: list[str] | str | None = None  # None: DEFAULT_TARGETS for the network's family

    def validate(self) -> LoraSpec:
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        return self


def network_family(net: nn.Module) -> str:
    """Which DEFAULT_TARGETS entry fits a denoiser network (by its class name)."""
    name = type(net).__name__
    table = {
        "UNet2DConditionModel": "unet",
        "SD3Transformer2DModel": "sd3",
        "FluxTransformer2DModel": "flux",
        "WanTransformer3DModel": "wan",
        "TinyVelocityNet": "tiny",
        "UNetModel": "comfy_unet",
        "OpenAISignatureMMDITWrapper": "comfy_mmdit",
        "Flux": "comfy_flux",
        "WanModel": "comfy_wan",
    }
    if name not in table:
        raise ValueError(f"no default LoRA targets for {name}; pass targets= (module names or a regex)")
    return table[name]


def add_lora(net: nn.Module, spec: LoraSpec, seed: int = 0) -> list[nn.Parameter]:
    """Inject LoRA adapters into `net` (in place; base weights frozen) and return the trainable parameters."""
    require("peft", "LoRA training")
    from peft import LoraConfig, inject_adapter_in_model

    spec.validate()
    targets = spec.targets if spec.targets is not None else DEFAULT_TARGETS[network_family(net)]
    torch.manual_seed(seed)  # adapter initialisation (lora_A random, lora_B zero) is reproducible
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=targets, init_lora_weights=True)
    try:
        inject_adapter_in_model(config, net)
    except ValueError as exc:
        raise ValueError(f"LoRA targets {targets!r} matched no module of {type(net).__name__}: {exc}") from exc
    for name, p in net.named_parameters():
        p.requires_grad_("lora_" in name)
    params = [p for n, p in net.named_parameters() if "lora_" in n]
    if not params:
        raise ValueError(f"LoRA targets {targets!r} matched no module of {type(net).__name__}")
    for p in params:  # adapters train in fp32 over fp16/bf16/fp8 base weights (peft casts activations to match)
        if p.dtype != torch.float32:
            p.data = p.data.float()
    return params


def lora_layers(net: nn.Module) -> Iterator[nn.Module]:
    """The peft adapter layers inside `net`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (m for m in net.modules() if isinstance(m, BaseTunerLayer))


@contextlib.contextmanager
def adapters_disabled(net: nn.Module) -> Iterator[None]:
    """Run `net` as the frozen base model (the reference policy), then switch the adapters back on."""
    layers = list(lora_layers(net))
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def lora_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights in PEFT's naming (`<module>.lora_A.weight`, `<module>.lora_B.weight`)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(net).items()}


def load_lora_state_dict(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights saved by `lora_state_dict` into a network that has the same adapters."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(net, state)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(f"LoRA weights do not fit this network: unexpected keys {missing[:3]}...")


def lora_modules(net: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{module name: (down [r, in...], up [out, r...], scale alpha / r)} for every adapted module."""
    out = {}
    for name, module in net.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            down = module.lora_A["default"].weight.detach().cpu()
            up = module.lora_B["default"].weight.detach().cpu()
            out[re.sub(r"\.base_layer$", "", name)] = (down, up, float(module.scaling["default"]))
    return out
