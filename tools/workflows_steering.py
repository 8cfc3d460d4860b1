"""Workflow specs that steer generation with the reward: noise search (SDXL, Flux) and LoRA RL training."""

from __future__ import annotations

from workflow_nodes import HF, PROMPT, REWARD_MODEL_NOTE, SEARCH_NOTE, TRAIN_PROMPTS, N, loader, note
from workflows_scoring import best_of_n_flux, best_of_n_sdxl


def noise_search_sdxl() -> list[N]:
    """Zero-order noise search with SDXL and the replay of the found noise."""
    sdxl = best_of_n_sdxl()  # its checkpoint loader is reused
    return [
        note(
            1,
            0,
            "**Reward noise search (SDXL)**: spend 64 denoiser calls (8 candidates x 8 steps) finding the "
            "initial noise the reward model likes best.\n\nCheckpoint: `sd_xl_base_1.0.safetensors` in "
            "`models/checkpoints/`.\n\n" + SEARCH_NOTE,
        ),
        sdxl[1],
        N(3, "CLIPTextEncode", (360, 0), {"text": PROMPT}, {"clip": (2, 1)}, title="positive"),
        N(
            4,
            "CLIPTextEncode",
            (360, 220),
            {"text": "blurry, low quality, watermark"},
            {"clip": (2, 1)},
            title="negative",
        ),
        N(5, "EmptyLatentImage", (360, 440), {"width": 1024, "height": 1024, "batch_size": 1}, size=(320, 110)),
        N(
            6,
            "CFGGuider",
            (720, 0),
            {"cfg": 7.0},
            {"model": (2, 0), "positive": (3, 0), "negative": (4, 0)},
            size=(320, 100),
        ),
        N(
            7,
            "BasicScheduler",
            (720, 140),
            {"scheduler": "karras", "steps": 8, "denoise": 1.0},
            {"model": (2, 0)},
            size=(320, 110),
        ),
        loader(8, (720, 300)),
        N(
            9,
            "RewardDanceNoiseSearch",
            (1100, 0),
            {"text": PROMPT, "algorithm": "zero_order", "budget": 64, "seed": 1},
            {"guider": (6, 0), "sigmas": (7, 0), "latent_image": (5, 0), "vae": (2, 2), "reward_model": (8, 0)},
            size=(360, 420),
        ),
        N(
            10,
            "SaveImage",
            (1500, 0),
            {"filename_prefix": "rewarddance/noise_search_sdxl"},
            {"images": (9, 1)},
            size=(400, 420),
        ),
        N(11, "KSamplerSelect", (1100, 480), {"sampler_name": "euler"}, size=(320, 60)),
        N(
            12,
            "SamplerCustomAdvanced",
            (1500, 480),
            links={"noise": (9, 2), "guider": (6, 0), "sampler": (11, 0), "sigmas": (7, 0), "latent_image": (5, 0)},
            title="replay the found noise",
            size=(320, 120),
        ),
        N(13, "VAEDecode", (1860, 480), links={"samples": (12, 0), "vae": (2, 2)}, size=(200, 50)),
        N(14, "PreviewImage", (1860, 560), links={"images": (13, 0)}, size=(360, 360)),
    ]


def noise_search_flux() -> list[N]:
    """Search over paths with Flux."""
    flux = best_of_n_flux()  # its loaders are reused
    return [
        note(
            1,
            0,
            "**Reward noise search with a flow model (Flux.1-dev)**: search over paths (RewardDance's "
            "inference-time scaling): trajectories branch at intermediate steps and the reward model "
            "prunes them on their predicted clean images.\n\nFiles: as in best_of_n_flux.\n\n" + SEARCH_NOTE,
        ),
        flux[1],
        flux[2],
        flux[3],
        N(5, "CLIPTextEncode", (360, 0), {"text": PROMPT}, {"clip": (3, 0)}, title="positive"),
        N(6, "FluxGuidance", (360, 220), {"guidance": 3.5}, {"conditioning": (5, 0)}, size=(320, 60)),
        N(7, "BasicGuider", (720, 0), links={"model": (2, 0), "conditioning": (6, 0)}, size=(320, 60)),
        N(
            8,
            "BasicScheduler",
            (720, 100),
            {"scheduler": "simple", "steps": 20, "denoise": 1.0},
            {"model": (2, 0)},
            size=(320, 110),
        ),
        N(9, "EmptySD3LatentImage", (360, 320), {"width": 1024, "height": 1024, "batch_size": 1}, size=(320, 110)),
        loader(10, (720, 260)),
        N(11, "RewardDanceCriteria", (720, 500), {"preset": "alignment", "preset_2": "plausibility"}, size=(340, 260)),
        N(
            12,
            "RewardDanceNoiseSearch",
            (1100, 0),
            {"text": PROMPT, "algorithm": "search_over_paths", "budget": 160, "seed": 1},
            {
                "guider": (7, 0),
                "sigmas": (8, 0),
                "latent_image": (9, 0),
                "vae": (4, 0),
                "reward_model": (10, 0),
                "criteria": (11, 0),
            },
            size=(360, 420),
        ),
        N(
            13,
            "SaveImage",
            (1500, 0),
            {"filename_prefix": "rewarddance/noise_search_flux"},
            {"images": (12, 1)},
            size=(400, 420),
        ),
    ]


def reward_lora_training_sd15() -> list[N]:
    """RAFT LoRA training on GenEval-style prompts, then a sample from the trained model."""
    train_prompts = "\n".join(TRAIN_PROMPTS)
    return [
        note(
            1,
            0,
            "**Reward LoRA training (SD1.5, RAFT)**: fine-tune a LoRA so the model's images score higher "
            "with the reward model on these prompts (GenEval-style colour, counting and two-object "
            "prompts: RewardDance's alignment target). Each step samples 4 images of one prompt, keeps "
            "the best and trains on it. Watch the chart: reward mean should rise while the window std "
            "stays up; when the std collapses the model is exploiting the reward.\n\n"
            "Files: the LoRA goes to `output/loras/rewarddance_sd15.safetensors` (plus one every 25 "
            "steps, and `rewarddance_sd15_run/` with the checkpoint, log and chart). Cancel saves a "
            "checkpoint; queue again with the same settings to resume. For flow models (SD3, Flux, Wan) "
            "try algorithm `grpo`.\n\nCheckpoint: `v1-5-pruned-emaonly.safetensors` in "
            "`models/checkpoints/`.\n\n" + REWARD_MODEL_NOTE,
        ),
        N(
            2,
            "CheckpointLoaderSimple",
            (0, 0),
            {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
            size=(320, 100),
            models=[
                {
                    "name": "v1-5-pruned-emaonly.safetensors",
                    "directory": "checkpoints",
                    "url": HF + "Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors",
                }
            ],
        ),
        N(3, "EmptyLatentImage", (0, 140), {"width": 512, "height": 512, "batch_size": 1}, size=(320, 110)),
        loader(4, (0, 300)),
        N(5, "RewardDanceCriteria", (0, 540), {"preset": "alignment"}, size=(340, 260)),
        N(
            6,
            "RewardDanceLoraTrainer",
            (380, 0),
            {
                "prompts": train_prompts,
                "negative": "blurry, low quality, watermark",
                "algorithm": "raft",
                "steps": 200,
                "learning_rate": 1e-4,
                "lora_rank": 16,
                "lora_alpha": 16.0,
                "group_size": 4,
                "sample_steps": 20,
                "cfg": 7.0,
                "scheduler": "normal",
                "seed": 0,
                "save_every": 25,
                "filename_prefix": "loras/rewarddance_sd15",
            },
            {
                "model": (2, 0),
                "clip": (2, 1),
                "vae": (2, 2),
                "latent_image": (3, 0),
                "reward_model": (4, 0),
                "criteria": (5, 0),
            },
            size=(400, 760),
        ),
        N(7, "PreviewImage", (820, 420), links={"images": (6, 2)}, title="reward chart", size=(480, 300)),
        N(
            8,
            "CLIPTextEncode",
            (820, -300),
            {"text": "a photo of a purple cup and a red umbrella"},
            {"clip": (2, 1)},
            title="try the trained model",
            size=(320, 140),
        ),
        N(
            9,
            "CLIPTextEncode",
            (820, -120),
            {"text": "blurry, low quality, watermark"},
            {"clip": (2, 1)},
            title="negative",
            size=(320, 120),
        ),
        N(
            10,
            "KSampler",
            (1180, -300),
            {"seed": 5, "steps": 25, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal"},
            {"model": (6, 0), "positive": (8, 0), "negative": (9, 0), "latent_image": (3, 0)},
            size=(320, 260),
        ),
        N(11, "VAEDecode", (1540, -300), links={"samples": (10, 0), "vae": (2, 2)}, size=(200, 50)),
        N(
            12,
            "SaveImage",
            (1540, -200),
            {"filename_prefix": "rewarddance/after_training"},
            {"images": (11, 0)},
            size=(400, 420),
        ),
    ]
