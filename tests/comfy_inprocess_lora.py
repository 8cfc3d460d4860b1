"""Run by tests/test_comfyui.py with ComfyUI's Python: a LoRA added to a tiny SD1.5-shaped ComfyUI model
with our peft adapters, exported in ComfyUI's format, loaded into a fresh copy of the model through the
stock LoraLoaderModelOnly; prints one JSON line comparing the outputs.

usage: COMFYUI_PATH=... python tests/comfy_inprocess_lora.py <pack dir> <loras dir> <strength>
"""

import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_inprocess_search import load_pack, tiny_sd15  # noqa: E402  (also puts ComfyUI on sys.path, CPU mode)

import comfy.model_management  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402


def outputs(patcher, x, sigma, ctx) -> torch.Tensor:
    """The denoised prediction of a (patched) model at one noise level."""
    comfy.model_management.load_models_gpu([patcher])
    with torch.no_grad():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx).float()


def main() -> None:
    pack_dir, loras_dir, strength = sys.argv[1], sys.argv[2], float(sys.argv[3])
    load_pack(pack_dir)
    lora = importlib.import_module("rewarddance_pack.backend.rl.lora")
    export = importlib.import_module("rewarddance_pack.backend.rl.export")
    torch.manual_seed(5)
    x, sigma, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 3.0]), torch.randn(2, 7, 32)

    trained = tiny_sd15()
    base_out = outputs(trained, x, sigma, ctx)
    with torch.inference_mode(False):
        params = lora.add_lora(trained.model.diffusion_model, lora.LoraSpec(rank=4, alpha=8.0), seed=0)
        with torch.no_grad():
            for p in params:
                p.add_(0.1 * torch.randn_like(p))  # as if trained: lora_B is no longer zero
    path = export.save_comfyui_lora(trained.model.diffusion_model, os.path.join(loras_dir, "rd_test.safetensors"), "comfy_unet")
    keys = len(export.comfyui_state_dict(trained.model.diffusion_model, "comfy_unet"))
    with torch.inference_mode(False), torch.no_grad():
        for name, p in trained.model.diffusion_model.named_parameters():
            if "lora_B" in name:
                p.mul_(strength)  # strength scales the weight delta: W + strength * alpha / r * B A
    in_memory = outputs(trained, x, sigma, ctx)

    folder_paths.add_model_folder_path("loras", loras_dir)
    fresh = tiny_sd15()
    patched = nodes.LoraLoaderModelOnly().load_lora_model_only(fresh, os.path.basename(path), strength)[0]
    loaded = outputs(patched, x, sigma, ctx)
    print(json.dumps({"keys": keys, "patches": len(patched.patches),
                      "lora_changes_output": float((in_memory - base_out).abs().max()),
                      "max_diff": float((loaded - in_memory).abs().max())}))


if __name__ == "__main__":
    main()
