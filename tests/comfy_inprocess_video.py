"""Run by tests/test_comfyui_inprocess.py with ComfyUI's Python: the pack's video paths in-process on a tiny
Wan-shaped ComfyUI model (ComfyUI's own WAN21 model class and Wan 2.1 VAE at tiny sizes), under inference mode as
ComfyUI runs nodes, with the tiny judge loaded as the loader node loads it. Prints one JSON line.

usage: COMFYUI_PATH=... python tests/comfy_inprocess_video.py <pack dir> <reward model dir> <output dir> <mode>
modes: score (Score Video: VIDEO vs frames vs the judge, and its bad inputs' errors), search (Reward Noise Search on an empty Wan latent),
raft | grpo | refl (the Reward LoRA Trainer on the tiny Wan model)
"""

import importlib
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_inprocess_search import load_pack  # noqa: E402  (puts ComfyUI on sys.path, CPU mode)
from comfy_inprocess_training import tiny_clip  # noqa: E402

# isort: split
import comfy.ldm.wan.vae  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import folder_paths  # noqa: E402
from comfy_api.latest import InputImpl, Types  # noqa: E402
from comfy_extras.nodes_hunyuan import EmptyHunyuanLatentVideo  # noqa: E402

import nodes  # noqa: E402

PROMPT = "a red fox running"
# ComfyUI's Wan 2.1 text-to-video config keys at a tiny size; text_dim 32 = the tiny CLIP's width (Wan's own
# umT5 encoder is far too big for a test; the model only sees a [1, tokens, text_dim] context either way).
TINY_WAN = {
    "image_model": "wan2.1",
    "model_type": "t2v",
    "dim": 32,
    "ffn_dim": 64,
    "freq_dim": 32,
    "text_dim": 32,
    "num_heads": 2,
    "num_layers": 1,
    "in_dim": 16,
    "out_dim": 16,
}
WIDTH = HEIGHT = 32
LENGTH = 5  # pixel frames: Wan's latent has (5 - 1) // 4 + 1 = 2 frames


def tiny_wan() -> comfy.model_patcher.ModelPatcher:
    """ComfyUI's WAN21 (flow) model as supported_models.WAN21_T2V builds it, with small random weights."""
    config = comfy.supported_models.WAN21_T2V(dict(TINY_WAN))
    model = config.get_model({}, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():  # comfy.ops layers skip weight init
            p.normal_(0, 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_wan_vae() -> comfy.sd.VAE:
    """A Wan 2.1 VAE (comfy.sd.VAE detects it from the state dict) at dim 8 with random weights."""
    module = comfy.ldm.wan.vae.WanVAE(
        dim=8,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
    )
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(v.shape, generator=g) * 0.15 for k, v in module.state_dict().items()}
    return comfy.sd.VAE(sd=sd)


def empty_wan_latent() -> dict:
    """The empty video latent ComfyUI's Wan workflows use (EmptyHunyuanLatentVideo): [1, 16, 2, 4, 4]."""
    return EmptyHunyuanLatentVideo.execute(WIDTH, HEIGHT, LENGTH, 1).args[0]


def setup(pack_dir: str, rm_dir: str):
    """The pack's node modules and the tiny judge, loaded as the loader node loads it."""
    load_pack(pack_dir)
    memory = importlib.import_module("rewarddance_pack.nodes.memory")
    return memory.load_managed(rm_dir, "fp32", "cpu", None, None)


def clip_frames(n: int, seed: int) -> torch.Tensor:
    """n smooth random frames [n, 32, 32, 3] in [0, 1] (neighbouring frames alike, as in a clip)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 8, 8, 3, generator=g)
    drift = torch.rand(n, 8, 8, 3, generator=g) * 0.3
    small = (base + drift.cumsum(0) * 0.2).clamp(0, 1)
    return torch.nn.functional.interpolate(small.movedim(-1, 1), size=(HEIGHT, WIDTH), mode="bilinear").movedim(1, -1)


def as_video(frames: torch.Tensor, fps: Fraction):
    """A ComfyUI VIDEO as the core Create Video node makes it."""
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, audio=None, frame_rate=fps))


def score(pack_dir: str, rm_dir: str) -> None:
    """Score Video with a VIDEO, with the same frames + fps, and the judge's own scores of those videos."""
    with torch.inference_mode():
        rm = setup(pack_dir, rm_dir)
        scoring = importlib.import_module("rewarddance_pack.nodes.scoring")
        media = importlib.import_module("rewarddance_pack.backend.media")
        node = scoring.ScoreVideo
        frames = torch.cat([clip_frames(6, 1), clip_frames(6, 2), clip_frames(6, 3)])
        fps = Fraction(24000, 1001)  # NTSC rate: a Fraction that is not a whole number
        one = node.execute(rm, PROMPT, 99.0, 0, 32, video=as_video(frames[:6], fps)).args
        one_frames = node.execute(rm, PROMPT, float(fps), 0, 32, frames=frames[:6]).args
        stacked = node.execute(rm, PROMPT, 99.0, 6, 32, video=as_video(frames, fps)).args
        stacked_frames = node.execute(rm, PROMPT, float(fps), 6, 32, frames=frames).args
        few = node.execute(rm, PROMPT, 99.0, 6, 3, video=as_video(frames, fps)).args  # 3 of 6 frames per video
        videos = [media.video_from_frames(frames[i : i + 6], float(fps)) for i in range(0, 18, 6)]
        reference = rm.score(videos, PROMPT, cot="none").scores
        sub = [media.video_from_frames(frames[i : i + 6][[0, 2, 5]], float(fps) * 3 / 6) for i in range(0, 18, 6)]
        reference_few = rm.score(sub, PROMPT, cot="none").scores
        errors = bad_inputs(scoring, rm)
    out = dict(
        one=one[0],
        one_frames=one_frames[0],
        stacked=stacked[0],
        stacked_frames=stacked_frames[0],
        few=few[0],
        reference=reference,
        reference_few=reference_few,
        summary=stacked[1],
        preview_shape=list(stacked[2].shape),
        errors=errors,
    )
    print(json.dumps(out))


def search(pack_dir: str, rm_dir: str, algorithm: str) -> None:
    """Reward Noise Search with `algorithm` on an empty Wan latent; the best score against re-scoring the returned
    frames."""
    with torch.inference_mode():
        rm = setup(pack_dir, rm_dir)
        search_nodes = importlib.import_module("rewarddance_pack.nodes.search")
        scoring = importlib.import_module("rewarddance_pack.nodes.scoring")
        patcher, vae = tiny_wan(), tiny_wan_vae()
        g = torch.Generator().manual_seed(5)
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds([[torch.randn(1, 7, 32, generator=g), {}]], [[torch.randn(1, 7, 32, generator=g), {}]])
        guider.set_cfg(3.0)
        sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 3)
        latent = empty_wan_latent()
        out = search_nodes.RewardNoiseSearch.execute(guider, sigmas, latent, vae, rm, PROMPT, algorithm, 9, 3)
        best_latent, image, noise, summary = out.args
        rescored = scoring.ScoreVideo.execute(rm, PROMPT, 16.0, 0, 32, frames=image).args[0]
        decoded = vae.decode(best_latent["samples"])
    print(
        json.dumps(
            {
                "latent_in": list(latent["samples"].shape),
                "latent_out": list(best_latent["samples"].shape),
                "image_shape": list(image.shape),
                "image_std": float(image.std()),
                "noise_shape": list(noise.noise.shape),
                "summary": summary,
                "best": out.ui["rewarddance_scores"][0]["score"],
                "rescored": rescored,
                "decode_vs_image": float((decoded.reshape(image.shape) - image).abs().max()),
            }
        )
    )


def train(pack_dir: str, rm_dir: str, out_dir: str, algorithm: str) -> None:
    """The Reward LoRA Trainer on the tiny Wan model: 2 steps, tiny settings."""
    with torch.inference_mode():
        rm = setup(pack_dir, rm_dir)
        training = importlib.import_module("rewarddance_pack.nodes.rl_training")
        folder_paths.set_output_directory(out_dir)
        model, vae, clip = tiny_wan(), tiny_wan_vae(), tiny_clip()
        seen = []
        score = rm.score

        def recording_score(items, prompt, **kw):  # the judge sees videos, not frames as separate images
            seen.extend(type(i).__name__ + str(tuple(getattr(i, "frames", i).shape)) for i in items)
            if algorithm == "grpo":  # the tiny judge scores a group alike (zero std: grpo skips it); use redness
                return SimpleNamespace(scores=[float(i.frames[..., 0].mean()) for i in items])
            return score(items, prompt, **kw)

        rm.score = recording_score
        trained, lora, chart, summary = training.RewardLoraTrainer.execute(
            model=model,
            clip=clip,
            vae=vae,
            latent_image=empty_wan_latent(),
            reward_model=rm,
            prompts="a red fox",
            negative="blurry",
            algorithm=algorithm,
            steps=2,
            learning_rate=0.05,
            lora_rank=2,
            lora_alpha=2.0,
            group_size=2,
            sample_steps=2,
            cfg=2.0,
            scheduler="simple",
            seed=7,
            save_every=0,
            filename_prefix=f"loras/wan_{algorithm}",
        ).args
        folder_paths.add_model_folder_path("loras", str(Path(out_dir) / "loras"))
        loaded = nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"wan_{algorithm}.safetensors", 1.0)[0]
    run_dir = Path(out_dir) / "loras" / f"wan_{algorithm}_run"
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    print(
        json.dumps(
            {
                "summary": summary,
                "lora_keys": len(lora),
                "file_patches": len(loaded.patches),
                "lora_up_max": max(float(v.abs().max()) for k, v in lora.items() if "lora_up" in k),
                "files": sorted(p.name for p in (Path(out_dir) / "loras").iterdir()),
                "rewards": [r["reward_mean"] for r in rows],
                "log_steps": [r["step"] for r in rows],
                "seen": sorted(set(seen)),
            }
        )
    )


def bad_inputs(scoring, rm) -> dict:
    """Score Video's bad inputs: each error message (or 'no error')."""
    frames = clip_frames(7, 1)
    node = scoring.ScoreVideo
    cases = {
        "uneven": lambda: node.execute(rm, PROMPT, 16.0, 3, 32, frames=frames),
        "uneven_video": lambda: node.execute(rm, PROMPT, 16.0, 3, 32, video=as_video(frames, Fraction(8))),
        "both": lambda: node.execute(rm, PROMPT, 16.0, 0, 32, frames=frames, video=as_video(frames, Fraction(8))),
        "no_frames": lambda: node.execute(rm, PROMPT, 16.0, 0, 32, video=as_video(frames[:0], Fraction(8))),
        "no_image_frames": lambda: node.execute(rm, PROMPT, 16.0, 0, 32, frames=frames[:0]),
    }
    errors = {}
    for name, call in cases.items():
        try:
            call()
            errors[name] = "no error"
        except ValueError as exc:
            errors[name] = str(exc)
    return errors


def main() -> None:
    pack_dir, rm_dir, out_dir, mode = sys.argv[1:5]
    if mode == "score":
        return score(pack_dir, rm_dir)
    if mode.startswith("search:"):  # search:<algorithm>
        return search(pack_dir, rm_dir, mode.partition(":")[2])
    return train(pack_dir, rm_dir, out_dir, mode)


if __name__ == "__main__":
    main()
