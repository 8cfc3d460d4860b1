"""Workflow specs that score what a graph generated: best of N (SDXL, Flux, Wan video), tournament with a
reference, the remote backend, plain scoring."""

from __future__ import annotations

from workflow_nodes import CAT_PROMPT, HF, PROMPT, REWARD_MODEL_NOTE, N, loader, note


def best_of_n_sdxl() -> list[N]:
    """Best of N with SDXL: a batch of 4, scored, the best kept."""
    return [
        note(
            1,
            0,
            "**Best of N (SDXL / SD1.5)**: generate a batch of 4, score every image with the reward model, "
            "keep the best (its latent comes along for a refiner or upscaler).\n\n"
            "Checkpoint: `sd_xl_base_1.0.safetensors` in `models/checkpoints/` (any SD1.5/SDXL checkpoint "
            "works).\n\n" + REWARD_MODEL_NOTE,
        ),
        N(
            2,
            "CheckpointLoaderSimple",
            (0, 0),
            {"ckpt_name": "sd_xl_base_1.0.safetensors"},
            size=(320, 100),
            models=[
                {
                    "name": "sd_xl_base_1.0.safetensors",
                    "directory": "checkpoints",
                    "url": HF + "stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
                }
            ],
        ),
        N(3, "CLIPTextEncode", (360, 0), {"text": PROMPT}, {"clip": (2, 1)}, title="positive"),
        N(
            4,
            "CLIPTextEncode",
            (360, 220),
            {"text": "blurry, low quality, watermark"},
            {"clip": (2, 1)},
            title="negative",
        ),
        N(5, "EmptyLatentImage", (360, 440), {"width": 1024, "height": 1024, "batch_size": 4}, size=(320, 110)),
        N(
            6,
            "KSampler",
            (720, 0),
            {"seed": 42, "steps": 25, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal"},
            {"model": (2, 0), "positive": (3, 0), "negative": (4, 0), "latent_image": (5, 0)},
            size=(320, 260),
        ),
        N(7, "VAEDecode", (1080, 0), links={"samples": (6, 0), "vae": (2, 2)}, size=(200, 50)),
        loader(8, (720, 320)),
        N(
            9,
            "RewardDanceBestOfN",
            (1320, 0),
            {"text": PROMPT, "top_k": 1},
            {"images": (7, 0), "reward_model": (8, 0), "latent": (6, 0)},
            size=(360, 360),
        ),
        N(
            10,
            "SaveImage",
            (1720, 0),
            {"filename_prefix": "rewarddance/best_of_n_sdxl"},
            {"images": (9, 0)},
            size=(400, 420),
        ),
    ]


def best_of_n_flux() -> list[N]:
    """Best of N with Flux."""
    return [
        note(
            1,
            0,
            "**Best of N with a flow model (Flux.1-dev)**: 4 samples, scored by the reward model "
            "(alignment + plausibility), the best one saved.\n\nFiles: `flux1-dev.safetensors` "
            "(models/diffusion_models), `clip_l.safetensors` and `t5xxl_fp16.safetensors` "
            "(models/text_encoders), `ae.safetensors` (models/vae).\n\n" + REWARD_MODEL_NOTE,
        ),
        N(
            2,
            "UNETLoader",
            (0, 0),
            {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
            size=(320, 100),
            models=[
                {
                    "name": "flux1-dev.safetensors",
                    "directory": "diffusion_models",
                    "url": HF + "black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
                }
            ],
        ),
        N(
            3,
            "DualCLIPLoader",
            (0, 140),
            {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"},
            size=(320, 130),
            models=[
                {
                    "name": "clip_l.safetensors",
                    "directory": "text_encoders",
                    "url": HF + "comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
                },
                {
                    "name": "t5xxl_fp16.safetensors",
                    "directory": "text_encoders",
                    "url": HF + "comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
                },
            ],
        ),
        N(
            4,
            "VAELoader",
            (0, 310),
            {"vae_name": "ae.safetensors"},
            size=(320, 60),
            models=[
                {
                    "name": "ae.safetensors",
                    "directory": "vae",
                    "url": HF + "black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors",
                }
            ],
        ),
        N(5, "CLIPTextEncode", (360, 0), {"text": PROMPT}, {"clip": (3, 0)}, title="positive"),
        N(6, "FluxGuidance", (360, 220), {"guidance": 3.5}, {"conditioning": (5, 0)}, size=(320, 60)),
        N(7, "CLIPTextEncode", (360, 320), {"text": ""}, {"clip": (3, 0)}, title="negative (unused by Flux at cfg 1)"),
        N(8, "EmptySD3LatentImage", (360, 540), {"width": 1024, "height": 1024, "batch_size": 4}, size=(320, 110)),
        N(
            9,
            "KSampler",
            (720, 0),
            {"seed": 7, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"},
            {"model": (2, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (8, 0)},
            size=(320, 260),
        ),
        N(10, "VAEDecode", (1080, 0), links={"samples": (9, 0), "vae": (4, 0)}, size=(200, 50)),
        loader(11, (720, 320)),
        N(12, "RewardDanceCriteria", (720, 560), {"preset": "alignment", "preset_2": "plausibility"}, size=(340, 260)),
        N(
            13,
            "RewardDanceBestOfN",
            (1320, 0),
            {"text": PROMPT, "top_k": 1},
            {"images": (10, 0), "reward_model": (11, 0), "criteria": (12, 0), "latent": (9, 0)},
            size=(360, 360),
        ),
        N(
            14,
            "SaveImage",
            (1720, 0),
            {"filename_prefix": "rewarddance/best_of_n_flux"},
            {"images": (13, 0)},
            size=(400, 420),
        ),
    ]


def best_of_n_wan_video() -> list[N]:
    """Best of N over Wan video clips."""
    video_prompt = "a red fox trotting through fresh snow, camera tracking alongside, golden hour"
    return [
        note(
            1,
            0,
            "**Best of N for video (Wan 2.1 text-to-video 1.3B)**: 2 clips of 33 frames, scored as videos "
            "(motion + temporal consistency + alignment), the best clip saved as animated WebP.\n\n"
            "Files: `wan2.1_t2v_1.3B_fp16.safetensors` (models/diffusion_models), "
            "`umt5_xxl_fp8_e4m3fn_scaled.safetensors` (models/text_encoders), `wan_2.1_vae.safetensors` "
            "(models/vae).\n\n" + REWARD_MODEL_NOTE,
            bottom=-160,  # above ModelSamplingSD3
        ),
        N(
            2,
            "UNETLoader",
            (0, 0),
            {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors", "weight_dtype": "default"},
            size=(320, 100),
            models=[
                {
                    "name": "wan2.1_t2v_1.3B_fp16.safetensors",
                    "directory": "diffusion_models",
                    "url": HF
                    + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors",
                }
            ],
        ),
        N(
            3,
            "CLIPLoader",
            (0, 140),
            {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan"},
            size=(320, 100),
            models=[
                {
                    "name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                    "directory": "text_encoders",
                    "url": HF
                    + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                }
            ],
        ),
        N(
            4,
            "VAELoader",
            (0, 280),
            {"vae_name": "wan_2.1_vae.safetensors"},
            size=(320, 60),
            models=[
                {
                    "name": "wan_2.1_vae.safetensors",
                    "directory": "vae",
                    "url": HF
                    + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors",
                }
            ],
        ),
        N(5, "ModelSamplingSD3", (360, -120), {"shift": 8.0}, {"model": (2, 0)}, size=(320, 60)),
        N(6, "CLIPTextEncode", (360, 0), {"text": video_prompt}, {"clip": (3, 0)}, title="positive"),
        N(
            7,
            "CLIPTextEncode",
            (360, 220),
            {"text": "static, blurry, distorted, low quality"},
            {"clip": (3, 0)},
            title="negative",
        ),
        N(
            8,
            "EmptyHunyuanLatentVideo",
            (360, 440),
            {"width": 832, "height": 480, "length": 33, "batch_size": 2},
            size=(320, 130),
        ),
        N(
            9,
            "KSampler",
            (720, 0),
            {"seed": 3, "steps": 30, "cfg": 6.0, "sampler_name": "uni_pc", "scheduler": "simple"},
            {"model": (5, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (8, 0)},
            size=(320, 260),
        ),
        N(10, "VAEDecode", (1080, 0), links={"samples": (9, 0), "vae": (4, 0)}, size=(200, 50)),
        loader(11, (720, 320)),
        N(
            12,
            "RewardDanceCriteria",
            (720, 560),
            {"preset": "motion", "preset_2": "temporal", "preset_3": "alignment"},
            size=(340, 260),
        ),
        N(
            13,
            "RewardDanceBestOfN",
            (1320, 0),
            {"text": video_prompt, "top_k": 1, "frames_per_video": 33, "fps": 16.0},
            {"images": (10, 0), "reward_model": (11, 0), "criteria": (12, 0), "latent": (9, 0)},
            size=(360, 360),
        ),
        N(
            14,
            "SaveAnimatedWEBP",
            (1720, 0),
            {"filename_prefix": "rewarddance/best_of_n_wan", "fps": 16.0},
            {"images": (13, 0)},
            size=(400, 420),
        ),
    ]


def tournament_with_reference() -> list[N]:
    """A round-robin tournament and a comparison against a reference image."""
    return [
        note(
            1,
            0,
            "**Pairwise tournament with a reference** (RewardDance's recipe): a round robin among the "
            "candidates picks the best one as reference; every new candidate is then scored as "
            "P(better than the reference). Load your own images (same size) into the LoadImage nodes.\n\n"
            + REWARD_MODEL_NOTE,
        ),
        N(2, "LoadImage", (0, 0), {"image": "example.png"}, size=(300, 320)),
        N(3, "LoadImage", (0, 360), {"image": "example.png"}, size=(300, 320)),
        N(4, "LoadImage", (0, 720), {"image": "example.png"}, size=(300, 320)),
        N(
            6,
            "BatchImagesNode",
            (340, 0),
            links={"images.image0": (2, 0), "images.image1": (3, 0), "images.image2": (4, 0)},
            size=(200, 110),
        ),
        loader(7, (340, 260)),
        N(
            8,
            "RewardDanceTournament",
            (720, 0),
            {"text": CAT_PROMPT},
            {"reward_model": (7, 0), "images": (6, 0)},
            size=(340, 300),
        ),
        N(
            9,
            "ImageFromBatch",
            (1100, 0),
            {"batch_index": 0, "length": 1},
            {"image": (8, 0)},
            title="reference = the winner",
            size=(300, 80),
        ),
        N(
            10,
            "RewardDanceCompareToReference",
            (1100, 160),
            {"text": CAT_PROMPT},
            {"reward_model": (7, 0), "candidates": (6, 0), "reference": (9, 0)},
            size=(340, 300),
        ),
        N(11, "PreviewImage", (1480, 0), links={"images": (10, 2)}, size=(400, 420)),
    ]


def remote_backend_scoring() -> list[N]:
    """Scoring through a `rewarddance serve` backend."""
    return [
        note(
            1,
            0,
            "**Remote backend scoring**: start the backend on the GPU box\n\n"
            "`rewarddance serve --model judge=Qwen/Qwen2.5-VL-7B-Instruct --host 0.0.0.0 --token <secret>`\n\n"
            "then set its URL and token here. Every scoring node works the same with a remote model.",
        ),
        N(2, "LoadImage", (0, 0), {"image": "example.png"}, size=(300, 320)),
        N(
            3,
            "RewardDanceRemoteModel",
            (0, 360),
            {"url": "http://127.0.0.1:8765", "model_name": "judge"},
            size=(340, 160),
        ),
        N(4, "RewardDanceCriteria", (360, 360), {"preset": "aesthetics", "preset_2": "plausibility"}, size=(340, 260)),
        N(
            5,
            "RewardDanceScoreImages",
            (360, 0),
            {"text": CAT_PROMPT},
            {"reward_model": (3, 0), "images": (2, 0), "criteria": (4, 0)},
            size=(360, 320),
        ),
    ]


def score_images() -> list[N]:
    """Scoring a batch of images."""
    return [
        note(
            1,
            0,
            '**Score images**: P("yes") that each image matches the prompt, drawn on a preview and '
            "output as FLOAT scores and a ranked summary.\n\n" + REWARD_MODEL_NOTE,
        ),
        N(2, "LoadImage", (0, 0), {"image": "example.png"}, size=(300, 320)),
        loader(3, (0, 360)),
        N(
            4,
            "RewardDanceScoreImages",
            (360, 0),
            {"text": CAT_PROMPT},
            {"reward_model": (3, 0), "images": (2, 0)},
            size=(360, 320),
        ),
    ]
