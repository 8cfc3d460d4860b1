"""Run by tests/test_comfyui_inprocess.py with ComfyUI's Python: Load Reward Model with a quantization and a judge
preset, then Score Images with it, against the backend's RewardModel loaded the same way. Prints one JSON line.

usage: COMFYUI_PATH=... python tests/comfy_inprocess_loader.py <pack dir> <tiny reward model dir> <quantization> <judge>
"""

import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_inprocess_search import load_pack  # noqa: E402  (puts ComfyUI on sys.path, CPU mode)

PROMPT = "a red apple on a table"


def main() -> None:
    pack_dir, rm_dir, quantization, judge = sys.argv[1:5]
    load_pack(pack_dir)
    loaders = importlib.import_module("rewarddance_pack.nodes.loaders")
    scoring = importlib.import_module("rewarddance_pack.nodes.scoring")
    reward_model = importlib.import_module("rewarddance_pack.backend.reward_model")
    images = (
        torch.rand(3, 56, 56, 3, generator=torch.Generator().manual_seed(4)) * 255
    ).round() / 255  # as 8-bit files load
    with torch.inference_mode():  # as ComfyUI runs a prompt
        rm = loaders.RewardModelLoader.execute("", rm_dir, "fp32", "cpu", "sdpa", 0, True, quantization, judge).args[0]
        node_scores = scoring.ScoreImages.execute(rm, PROMPT, images, "exact", False).args[0]
    backend = reward_model.RewardModel.from_pretrained(
        rm_dir, dtype="fp32", device="cpu", quantization=quantization, judge=judge
    )
    linear_types = sorted({type(m).__name__ for m in rm.vlm.model.modules() if "Linear" in type(m).__name__})
    print(
        json.dumps(
            {
                "node": list(node_scores),
                "backend": backend.score(images, PROMPT).scores,
                "linear_types": linear_types,
                "differentiable": rm.differentiable,
                "stays_on": str(rm.comfy_patcher.offload_device),
            }
        )
    )


if __name__ == "__main__":
    main()
