"""Run by tests/test_comfyui_inprocess.py with ComfyUI's Python: the reward model loaded as the loader node loads
it, then loaded by ComfyUI's ModelPatcher with a weight budget of half its size (ComfyUI's partial "lowvram"
load), so most modules stream their weights. Scores and the reward's gradient must equal the fully loaded model's.
On this CPU the streamed weights are copied CPU to CPU; the code path is the one a GPU takes. Prints one JSON line.

usage: COMFYUI_PATH=... python tests/comfy_inprocess_streaming.py <pack dir> <tiny reward model dir>
"""

import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_inprocess_search import load_pack  # noqa: E402  (puts ComfyUI on sys.path, CPU mode)

# isort: split
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402

PROMPT = "a red apple on a table"


def scores_and_gradient(rm, images: torch.Tensor) -> tuple[list[float], list[float]]:
    """The judge's scores of `images` and the gradient of their sum w.r.t. the pixels (first 8 values)."""
    scores = rm.score(images, PROMPT).scores
    pixels = images.clone().requires_grad_(True)
    rm.reward(pixels, PROMPT).sum().backward()
    return scores, pixels.grad.flatten()[:8].tolist()


def main() -> None:
    pack_dir, rm_dir = sys.argv[1:3]
    load_pack(pack_dir)
    memory = importlib.import_module("rewarddance_pack.nodes.memory")
    streaming = importlib.import_module("rewarddance_pack.nodes.streaming")
    rm = memory.load_managed(rm_dir, "fp32", "cpu", None, None)
    images = torch.rand(3, 56, 56, 3, generator=torch.Generator().manual_seed(3))
    full = scores_and_gradient(rm, images)
    patcher = rm.comfy_patcher
    total = patcher.model_size()
    memory.unload(rm)
    rm.before_use = lambda: None  # the partial load below stays as it is for the calls
    patcher.load(torch.device("cpu"), lowvram_model_memory=total // 2)
    streamed = streaming.streamed_modules(patcher.model)
    partial = scores_and_gradient(rm, images)
    low = bool(patcher.model.model_lowvram)
    patcher.unpatch_model(patcher.offload_device, unpatch_weights=True)
    after = streaming.streamed_modules(patcher.model)
    part = memory.reward_model_part(rm)
    memory.device_budget = lambda device: part.minimum_bytes + 1000  # as if the device held only that much
    generator = comfy.model_patcher.ModelPatcher(torch.nn.Linear(64, 64), torch.device("cpu"), torch.device("cpu"))
    try:
        memory.check_models_fit(generator, "the trainer's copy of MODEL", rm, "model")
        refusal = "no error"
    except ValueError as err:
        refusal = str(err)
    print(
        json.dumps(
            {
                "streamable": sum(1 for m in patcher.model.modules() if hasattr(m, "comfy_cast_weights")),
                "with_weights": sum(1 for m in patcher.model.modules() if any(True for _ in m.parameters(False))),
                "streamed": streamed,
                "lowvram": low,
                "after_unload": after,
                "full_scores": full[0],
                "partial_scores": partial[0],
                "full_grad": full[1],
                "partial_grad": partial[1],
                "loaded_models": len(mm.current_loaded_models),
                "reward_part": [part.full_bytes, part.minimum_bytes],
                "refusal": refusal,
            }
        )
    )


if __name__ == "__main__":
    main()
