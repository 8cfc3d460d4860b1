"""Run by tests/test_comfyui_inprocess.py with ComfyUI's Python: a LoRA added to a tiny SD1.5-shaped ComfyUI model
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
from comfy_inprocess_search import load_pack, tiny_sd15  # noqa: E402  (first: puts ComfyUI on sys.path, CPU mode)

# isort: split
import comfy.model_management  # noqa: E402
import folder_paths  # noqa: E402

import nodes  # noqa: E402


def outputs(patcher, x, sigma, ctx) -> torch.Tensor:
    """The denoised prediction of a (patched) model at one noise level."""
    comfy.model_management.load_models_gpu([patcher])
    with torch.no_grad():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx).float()


def tiny_comfy_networks() -> dict:
    """ComfyUI's own Flux, SD3 (MMDiT) and Wan diffusion models at tiny sizes (as ComfyUI's loaders build them)."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    from comfy.ldm.wan.model import WanModel

    ops = comfy.ops.disable_weight_init
    return {
        "flux": Flux(
            in_channels=4,
            out_channels=4,
            vec_in_dim=8,
            context_in_dim=8,
            hidden_size=32,
            mlp_ratio=2.0,
            num_heads=2,
            depth=1,
            depth_single_blocks=1,
            axes_dim=[4, 6, 6],
            theta=10000,
            patch_size=2,
            qkv_bias=True,
            guidance_embed=True,
            txt_ids_dims=[],
            operations=ops,
        ),
        "sd3": OpenAISignatureMMDITWrapper(
            input_size=None,
            patch_size=2,
            in_channels=4,
            depth=2,
            adm_in_channels=8,
            context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 8, "out_features": 128}},
            pos_embed_max_size=16,
            num_patches=256,
            out_channels=4,
            operations=ops,
        ),
        "wan": WanModel(
            dim=32, ffn_dim=64, freq_dim=32, text_dim=8, num_heads=2, num_layers=1, in_dim=4, out_dim=4, operations=ops
        ),
    }


def families(pack_dir: str) -> None:
    """For each tiny ComfyUI network: its LoRA family, adapted modules, and exported keys that name no weight."""
    load_pack(pack_dir)
    lora = importlib.import_module("rewarddance_pack.backend.rl.lora")
    export = importlib.import_module("rewarddance_pack.backend.rl.export")
    out = {}
    for name, net in tiny_comfy_networks().items():
        weights = {k[: -len(".weight")] for k in net.state_dict() if k.endswith(".weight")}
        family = lora.network_family(net)
        lora.add_lora(net, lora.LoraSpec(rank=2, alpha=2.0))
        keys = export.comfyui_state_dict(net, family)
        prefixes = {k.rsplit(".", 2)[0] for k in keys if k.endswith(".lora_down.weight")}
        unknown = [p for p in prefixes if p.removeprefix("diffusion_model.") not in weights]
        out[name] = {"family": family, "adapted": len(prefixes), "unknown": unknown}
    print(json.dumps(out))


def main() -> None:
    if sys.argv[2] == "families":
        return families(sys.argv[1])
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
    path = export.save_comfyui_lora(
        trained.model.diffusion_model, os.path.join(loras_dir, "rd_test.safetensors"), "comfy_unet"
    )
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
    print(
        json.dumps(
            {
                "keys": keys,
                "patches": len(patched.patches),
                "lora_changes_output": float((in_memory - base_out).abs().max()),
                "max_diff": float((loaded - in_memory).abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
