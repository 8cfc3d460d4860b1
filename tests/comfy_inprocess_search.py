"""Run by tests/test_comfyui_inprocess.py with ComfyUI's Python: the Reward Noise Search node on a tiny SD1.5-shaped
model and a TAESD VAE built in-process, then replay its NOISE through SamplerCustomAdvanced's path
(guider + euler), all under inference mode as ComfyUI runs a prompt. Prints one JSON line with the results.

usage: COMFYUI_PATH=... python tests/comfy_inprocess_search.py <pack dir> <tiny reward model dir> <algorithm> [interrupt]
       ... <pack dir> <tiny reward model dir> gradient | bad_inputs | pruning
"""

import importlib.util
import json
import os
import sys

import torch

sys.path.insert(0, os.environ["COMFYUI_PATH"])
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import comfy.model_base  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
from comfy.taesd.taesd import TAESD  # noqa: E402

TINY_UNET = {
    "context_dim": 32,
    "model_channels": 32,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "in_channels": 4,
    "out_channels": 4,
    "num_res_blocks": [1, 1],
    "channel_mult": [1, 2],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_heads": 2,
    "num_head_channels": -1,
    "image_size": 32,
    "use_checkpoint": False,
    "num_classes": None,
    "dims": 2,
}


def tiny_sd15() -> comfy.model_patcher.ModelPatcher:
    """An SD1.5-shaped UNet with small random weights (comfy.ops layers skip init, so set them here)."""
    torch.manual_seed(0)
    model = comfy.model_base.BaseModel(comfy.supported_models.SD15(dict(TINY_UNET)), device="cpu")
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.normal_(0, 0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_taesd() -> comfy.sd.VAE:
    """A TAESD VAE with random weights small enough that decoded images vary."""
    torch.manual_seed(1)
    module = TAESD()
    with torch.no_grad():
        for name, p in module.named_parameters():  # comfy.ops layers leave weights and biases uninitialised
            if p.ndim > 1:
                p.normal_(0, 0.05)
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
    return comfy.sd.VAE(sd=module.state_dict())


def load_pack(path: str):
    spec = importlib.util.spec_from_file_location(
        "rewarddance_pack", os.path.join(path, "__init__.py"), submodule_search_locations=[path]
    )
    pack = importlib.util.module_from_spec(spec)
    sys.modules["rewarddance_pack"] = pack
    spec.loader.exec_module(pack)
    return importlib.import_module("rewarddance_pack.nodes.search"), importlib.import_module(
        "rewarddance_pack.backend.reward_model"
    )


def bad_inputs(pack_dir: str, rm_dir: str) -> None:
    """Call node execute() with bad inputs; print each error message (or 'no error')."""
    search, reward_model = load_pack(pack_dir)
    scoring = importlib.import_module("rewarddance_pack.nodes.scoring")
    loaders = importlib.import_module("rewarddance_pack.nodes.loaders")
    client = importlib.import_module("rewarddance_pack.backend.client")
    rm = reward_model.RewardModel.from_pretrained(rm_dir, dtype="fp32", device="cpu")
    remote = client.RewardClient("http://127.0.0.1:9")  # never reached: the node refuses before sampling
    patcher = tiny_sd15()
    guider = comfy.samplers.CFGGuider(patcher)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "normal", 2)
    calls = {
        "search_batch": lambda: search.RewardNoiseSearch.execute(
            guider, sigmas, {"samples": torch.zeros(2, 4, 8, 8)}, tiny_taesd(), rm, "x", "best_of_n", 4, 0
        ),
        "search_prompt": lambda: search.RewardNoiseSearch.execute(
            guider, sigmas, {"samples": torch.zeros(1, 4, 8, 8)}, tiny_taesd(), rm, "  ", "best_of_n", 4, 0
        ),
        "gradient_remote": lambda: search.RewardNoiseSearch.execute(
            guider, sigmas, {"samples": torch.zeros(1, 4, 8, 8)}, tiny_taesd(), remote, "x", "noise_gradient", 4, 0
        ),
        "prune_other": lambda: search.RewardNoiseSearch.execute(
            guider, sigmas, {"samples": torch.zeros(1, 4, 8, 8)}, tiny_taesd(), rm, "x", "tree", 4, 0, None, 0.5
        ),
        "prune_step": lambda: search.RewardNoiseSearch.execute(
            guider, sigmas, {"samples": torch.zeros(1, 4, 8, 8)}, tiny_taesd(), rm, "x", "best_of_n", 4, 0, None, 1.5
        ),
        "prune_past_the_end": lambda: search.RewardNoiseSearch.execute(
            guider, sigmas, {"samples": torch.zeros(1, 4, 8, 8)}, tiny_taesd(), rm, "x", "best_of_n", 4, 0, None, 2
        ),
        "keep_fraction": lambda: search.RewardNoiseSearch.execute(
            guider, sigmas, {"samples": torch.zeros(1, 4, 8, 8)}, tiny_taesd(), rm, "x", "best_of_n", 4, 0, None, 1, 0
        ),
        "video_missing": lambda: scoring.ScoreVideo.execute(rm, "x", 8.0, 0, 8),
        "hub_id_empty": lambda: loaders.checkpoint_path(loaders.HUB_CHOICE, " "),
        "score_prompt": lambda: scoring.ScoreImages.execute(rm, "", torch.rand(1, 16, 16, 3), "exact", False),
        "criteria_samples": lambda: scoring.RewardCriteria.execute(
            "alignment", "none", "none", "", "reasoning_first", "", "", samples=3
        ),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = "no error"
        except ValueError as exc:
            out[name] = str(exc)
    out["criteria_inputs"] = [i.id for i in scoring.RewardCriteria.define_schema().inputs]  # saved widget order
    sampled = scoring.RewardCriteria.execute(
        "alignment", "none", "none", "", "reasoning_first", "", "", samples=2, temperature=0.9, top_p=0.8, seed=3
    ).result[0]
    out["criteria_sampled"] = sampled.overrides()
    print(json.dumps(out))


def search_setup(pack_dir: str, rm_dir: str):
    """The search module, guider (tiny SD1.5 + CFG 3), sigmas (4 steps), empty latent, TAESD and reward model, made
    in inference mode as ComfyUI makes them (the reward model outside it, as nodes/memory.py loads it)."""
    search, reward_model = load_pack(pack_dir)
    memory = importlib.import_module("rewarddance_pack.nodes.memory")
    rm = memory.load_managed(rm_dir, "fp32", "cpu", None, None)
    with torch.inference_mode():
        patcher, vae = tiny_sd15(), tiny_taesd()
        g = torch.Generator().manual_seed(5)
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds([[torch.randn(1, 77, 32, generator=g), {}]], [[torch.randn(1, 77, 32, generator=g), {}]])
        guider.set_cfg(3.0)
        sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "normal", 4)
        latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return search, guider, sigmas, latent, vae, rm


def recorded() -> dict:
    """Every candidate's initial noise and score, in order, as the search's Tracker records them (instrumentation)."""
    algorithms = importlib.import_module("rewarddance_pack.backend.search.algorithms")
    seen = {"noises": [], "scores": []}
    record = algorithms.Tracker.record

    def spy(self, round_, latents, noise, scores, images):
        seen["noises"].extend(n.clone() for n in noise)
        seen["scores"].extend(float(x) for x in scores)
        return record(self, round_, latents, noise, scores, images)

    algorithms.Tracker.record = spy
    return seen


def gradient(pack_dir: str, rm_dir: str) -> None:
    """noise_gradient twice: with the judge, then with its gradient cut (a constant reward, only the regulariser
    moves the noise); the rounds' noises, scores, and how far the judge's gradient moved the noise."""
    search, guider, sigmas, latent, vae, rm = search_setup(pack_dir, rm_dir)
    seen = recorded()
    with torch.inference_mode():
        out = search.RewardNoiseSearch.execute(guider, sigmas, latent, vae, rm, "a red fox", "noise_gradient", 16, 3)
        with_judge, scores = list(seen["noises"]), list(seen["scores"])
        seen["noises"].clear()
        rm.reward = lambda images, prompt, **kw: images.sum() * 0 + torch.full((images.shape[0],), 0.5)
        search.RewardNoiseSearch.execute(guider, sigmas, latent, vae, rm, "a red fox", "noise_gradient", 16, 3)
    cut = seen["noises"]
    loaded = [m.model for m in comfy.model_management.current_loaded_models]
    print(
        json.dumps(
            {
                "rounds": len(with_judge),
                "round_steps": [float((b - a).abs().max()) for a, b in zip(with_judge, with_judge[1:], strict=False)],
                "judge_moved": float((with_judge[-1] - cut[-1]).abs().max()),
                "scores": scores,
                "best_score": float(out.args[3].split("best score ")[1].split()[0]),
                "summary": out.args[3],
                "copies_left_loaded": sum(
                    1 for m in loaded if m is not guider.model_patcher and m is not rm.comfy_patcher
                ),
            }
        )
    )


def pruning(pack_dir: str, rm_dir: str) -> None:
    """best_of_n plain, with prune_at 0.5 and keep_fraction 1 (the plain search), and pruned to a quarter."""
    search, guider, sigmas, latent, vae, rm = search_setup(pack_dir, rm_dir)
    runs = {}
    with torch.inference_mode():
        for name, extra in {"plain": (), "keep_all": (None, 0.5, 1.0), "pruned": (None, 0.5, 0.25)}.items():
            out = search.RewardNoiseSearch.execute(
                guider, sigmas, latent, vae, rm, "a red fox", "best_of_n", 24, 3, *extra
            )
            best_latent, image, noise, summary = out.args
            replay = guider.sample(
                noise.generate_noise(latent), latent["samples"], comfy.samplers.sampler_object("euler"), sigmas, seed=3
            )
            runs[name] = {
                "latent": best_latent["samples"],
                "summary": summary,
                "replay_max_diff": float((replay - best_latent["samples"]).abs().max()),
            }
    print(
        json.dumps(
            {
                "summaries": {k: v["summary"] for k, v in runs.items()},
                "keep_all_equal": bool(torch.equal(runs["plain"]["latent"], runs["keep_all"]["latent"])),
                "replay_max_diff": {k: v["replay_max_diff"] for k, v in runs.items()},
            }
        )
    )


def main() -> None:
    if sys.argv[3] == "bad_inputs":
        return bad_inputs(sys.argv[1], sys.argv[2])
    if sys.argv[3] == "pruning":
        return pruning(sys.argv[1], sys.argv[2])
    if sys.argv[3] == "gradient":
        return gradient(sys.argv[1], sys.argv[2])
    pack_dir, rm_dir, algorithm = sys.argv[1:4]
    interrupt = {"on": sys.argv[4:5] == ["interrupt"]}
    import comfy.model_management as mm
    import comfy.utils

    previews = []

    def hook(value, total, preview, node_id=None):  # stands in for ComfyUI's server hook
        mm.throw_exception_if_processing_interrupted()
        if preview is not None:
            previews.append(preview[1].size)
        if interrupt["on"]:
            mm.interrupt_current_processing(True)  # the user presses Cancel after the first update

    comfy.utils.set_progress_bar_global_hook(hook)
    search, guider, sigmas, latent, vae, rm = search_setup(pack_dir, rm_dir)
    with torch.inference_mode():
        out = search.RewardNoiseSearch.execute(guider, sigmas, latent, vae, rm, "a red fox", algorithm, 24, 3)
        best_latent, image, noise, summary = out.args
        interrupt["on"] = False
        mm.interrupt_current_processing(False)  # ComfyUI clears it before the next prompt
        replay = guider.sample(
            noise.generate_noise(latent), latent["samples"], comfy.samplers.sampler_object("euler"), sigmas, seed=3
        )
        decoded = vae.decode(best_latent["samples"])  # what VAEDecode makes of the LATENT output
    first_noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    print(
        json.dumps(
            {
                "summary": summary,
                "latent_shape": list(best_latent["samples"].shape),
                "image_shape": list(image.shape),
                "replay_max_diff": float((replay - best_latent["samples"]).abs().max()),
                "image_std": float(image.std()),
                "score": float(rm.score(image, "a red fox").scores[0]),
                "latent_rescored": float(rm.score(decoded, "a red fox").scores[0]),
                "best_score": float(summary.split("best score ")[1].split()[0]),
                "first_noise_differs": bool(not torch.equal(noise.noise, first_noise)),
                "replays": noise.replays,
                "previews": len(previews),
            }
        )
    )


if __name__ == "__main__":
    main()
