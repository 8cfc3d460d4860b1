"""Autograd-usable copies of ComfyUI models: ComfyUI creates weights in inference mode, which autograd cannot
save for backward, and the user's MODEL and VAE must not change. The LoRA trainer and the noise search's
noise_gradient use these copies.

- `trainable_copy`: a clone of a MODEL with its own diffusion-model weights as ordinary tensors (weight patches
  such as LoRAs merged in).
- `differentiable_decoder`: a private copy of the VAE decoder with ordinary weights.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import comfy.lora
import comfy.utils
import torch

from .memory import unload_patcher

LOADED_STATE = {
    "model_loaded_weight_memory": 0,
    "lowvram_patch_counter": 0,
    "model_lowvram": False,
    "current_weight_patches_uuid": None,
    "model_offload_buffer_memory": 0,
}


def trainable_copy(model: Any) -> Any:
    """A clone of the MODEL with its own diffusion-model weights as ordinary tensors and its weight patches
    (e.g. LoRAs loaded before) merged in; object patches and model options carry over. The MODEL is untouched."""
    unload_patcher(lambda loaded: loaded.model is model.model)  # its weights back to the unpatched originals
    with torch.inference_mode(False):
        source = model.model
        base = copy.copy(source)
        base.__dict__ = dict(source.__dict__)
        base._modules, base._parameters, base._buffers = (
            dict(source._modules),
            dict(source._parameters),
            dict(source._buffers),
        )
        base.diffusion_model = copy.deepcopy(source.diffusion_model)
        base.__dict__.update(LOADED_STATE, device=model.offload_device)
        for key, patches in model.patches.items():
            weight = comfy.utils.get_attr(base, key)
            merged = comfy.lora.calculate_weight(patches, weight.detach().float().clone(), key)
            comfy.utils.set_attr_param(base, key, merged.to(weight.dtype))
        trainable = model.clone()
        trainable.model = base
        trainable.patches, trainable.backup, trainable.object_patches_backup = {}, {}, {}
        trainable.patches_uuid = uuid.uuid4()
        trainable.parent = None
        base.requires_grad_(False)
    return trainable


def differentiable_decoder(vae: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """ReFL's decode: a private copy of the VAE decoder with ordinary weights, so the reward's gradient reaches the LoRA."""
    with torch.inference_mode(False):
        decoder = copy.deepcopy(vae.first_stage_model).to(vae.device).requires_grad_(False)

    def decode(latents: torch.Tensor) -> torch.Tensor:
        out = vae.process_output(decoder.decode(latents.to(vae.device, vae.vae_dtype)).float())
        return out.movedim(1, -1)  # [B, C, H, W] -> [B, H, W, C]; video [B, C, T, H, W] -> [B, T, H, W, C]

    return decode
