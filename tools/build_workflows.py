"""Write the shipped workflows (ComfyUI UI format) and their API-format twins from one spec each.

Widget order and socket types come from a ComfyUI `/object_info` dump, so both formats match the real node
definitions:

    curl -s localhost:8188/object_info > /tmp/object_info.json      # a ComfyUI with this pack loaded
    python tools/build_workflows.py /tmp/object_info.json            # rewrites workflows/*.json, workflows/api/*.json

Frontend-only nodes (MarkdownNote) exist only in the UI format.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FRONTEND_ONLY = {"MarkdownNote", "Note"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
REWARD_MODEL_DIR = "Qwen2.5-VL-7B-Instruct"
REWARD_MODEL_NOTE = (
    f"Reward model: download Qwen/Qwen2.5-VL-7B-Instruct into `models/reward_models/{REWARD_MODEL_DIR}/` "
    "(`huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct --local-dir "
    f"models/reward_models/{REWARD_MODEL_DIR}`), or pick '(hub id below)' to download on first use."
)
PACK = {"cnr_id": "rewarddance", "ver": "0.1.0"}


@dataclass
class N:
    """One node of a workflow spec: widget values by input name, links by input name -> (node id, slot)."""

    id: int
    type: str
    pos: tuple[int, int]
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    title: str | None = None
    size: tuple[int, int] = (320, 160)
    models: list[dict] | None = None  # files this node needs (properties.models)
    text: str | None = None  # MarkdownNote body


def widget_names(info: dict) -> list[str]:
    """Inputs shown as widgets, in ComfyUI's order."""
    order = info.get("input_order", {})
    names = []
    for section in ("required", "optional"):
        for name in order.get(section, list(info["input"].get(section, {}))):
            spec = info["input"][section][name]
            kind = spec[0] if isinstance(spec[0], str) else "COMBO"
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if kind in WIDGET_TYPES and not opts.get("forceInput"):
                names.append(name)
    return names


def input_type(info: dict, name: str) -> str:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is not None:
            return spec[0] if isinstance(spec[0], str) else "COMBO"
    raise KeyError(f"{info['name']} has no input {name!r}")


def has_control(info: dict, name: str) -> bool:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is not None and len(spec) > 1 and isinstance(spec[1], dict):
            return bool(spec[1].get("control_after_generate"))
    return False


def build(name: str, nodes: list[N], objects: dict) -> tuple[dict, dict]:
    """(UI workflow, API prompt) for one spec."""
    links, ui_nodes, api = [], [], {}
    out_links: dict[tuple[int, int], list[int]] = {}
    for node in nodes:
        for input_name, (src, slot) in node.links.items():
            link_id = len(links) + 1
            src_type = objects[next(n.type for n in nodes if n.id == src)]["output"][slot]
            links.append([link_id, src, slot, node.id, None, src_type, input_name])
            out_links.setdefault((src, slot), []).append(link_id)
    for order, node in enumerate(nodes):
        if node.type in FRONTEND_ONLY:
            ui_nodes.append(
                {
                    "id": node.id,
                    "type": node.type,
                    "pos": list(node.pos),
                    "size": list(node.size),
                    "flags": {},
                    "order": order,
                    "mode": 0,
                    "inputs": [],
                    "outputs": [],
                    "properties": {},
                    "widgets_values": [node.text],
                }
            )
            continue
        info = objects[node.type]
        widgets = widget_names(info)
        unknown = set(node.widgets) - set(widgets)
        if unknown:
            raise ValueError(f"{name}: {node.type} has no widget(s) {sorted(unknown)}")
        inputs, values = [], []
        for link in links:
            if link[3] == node.id:
                link[4] = len(inputs)
                entry = {"name": link[6], "type": input_type(info, link[6]), "link": link[0]}
                if link[6] in widgets:
                    entry["widget"] = {"name": link[6]}
                inputs.append(entry)
        for w in widgets:
            value = node.widgets.get(w, default_value(info, w))
            values.append(value)
            if has_control(info, w):
                values.append("fixed")
        outputs = [
            {
                "name": out_name,
                "type": out_type,
                "links": out_links.get((node.id, slot), []),
                **({"shape": 6} if info.get("output_is_list", [False] * 99)[slot] else {}),
            }
            for slot, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"]))
        ]
        props: dict[str, Any] = {"Node name for S&R": node.type}
        if node.type.startswith("RewardDance"):
            props.update(PACK)
        if node.models:
            props["models"] = node.models
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": list(node.pos),
            "size": list(node.size),
            "flags": {},
            "order": order,
            "mode": 0,
            "inputs": inputs,
            "outputs": outputs,
            "properties": props,
            "widgets_values": values,
        }
        if node.title:
            entry["title"] = node.title
        ui_nodes.append(entry)
        api_inputs = {w: node.widgets.get(w, default_value(info, w)) for w in widgets if w not in node.links}
        api_inputs.update({k: [str(src), slot] for k, (src, slot) in node.links.items()})
        api[str(node.id)] = {
            "class_type": node.type,
            "inputs": api_inputs,
            "_meta": {"title": node.title or info["display_name"]},
        }
    ui = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "rewarddance/" + name)),
        "revision": 0,
        "last_node_id": max(n.id for n in nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": [link[:6] for link in links],
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }
    return ui, api


def default_value(info: dict, name: str) -> Any:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is None:
            continue
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if "default" in opts:
            return opts["default"]
        options = spec[0] if isinstance(spec[0], list) else opts.get("options")
        if options is not None:
            return options[0] if options else ""
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])
    raise KeyError(name)


def loader(id: int, pos: tuple[int, int]) -> N:
    """The Reward Model Loader as shipped: the 7B judge from models/reward_models/."""
    return N(
        id,
        "RewardDanceModelLoader",
        pos,
        {"model": REWARD_MODEL_DIR, "dtype": "auto", "device": "auto"},
        models=[
            {
                "name": REWARD_MODEL_DIR,
                "url": "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct",
                "directory": "reward_models",
            }
        ],
        size=(340, 200),
    )


def note(id: int, pos: tuple[int, int], text: str) -> N:
    return N(id, "MarkdownNote", pos, text=text, size=(420, 220))


PROMPT = "a red fox standing in fresh snow at golden hour, detailed fur, photograph"
TRAIN_PROMPTS = [
    "a photo of a blue fire hydrant",
    "a photo of a pink car",
    "a photo of two clocks",
    "a photo of four handbags",
    "a photo of a bench and a sports ball",
    "a photo of a toaster and an oven",
    "a photo of a purple wine glass and a black apple",
    "a photo of a green bus and a purple microwave",
]


def specs() -> dict[str, list[N]]:
    """Every shipped workflow."""
    hf = "https://huggingface.co/"
    sdxl = [
        note(
            1,
            (0, -260),
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
                    "url": hf + "stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
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
    flux = [
        note(
            1,
            (0, -260),
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
                    "url": hf + "black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
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
                    "url": hf + "comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
                },
                {
                    "name": "t5xxl_fp16.safetensors",
                    "directory": "text_encoders",
                    "url": hf + "comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
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
                    "url": hf + "black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors",
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
    video_prompt = "a red fox trotting through fresh snow, camera tracking alongside, golden hour"
    wan = [
        note(
            1,
            (0, -260),
            "**Best of N for video (Wan 2.1 text-to-video 1.3B)**: 2 clips of 33 frames, scored as videos "
            "(motion + temporal consistency + alignment), the best clip saved as animated WebP.\n\n"
            "Files: `wan2.1_t2v_1.3B_fp16.safetensors` (models/diffusion_models), "
            "`umt5_xxl_fp8_e4m3fn_scaled.safetensors` (models/text_encoders), `wan_2.1_vae.safetensors` "
            "(models/vae).\n\n" + REWARD_MODEL_NOTE,
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
                    "url": hf
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
                    "url": hf
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
                    "url": hf
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
    cat = "a photo of a cat"
    tournament = [
        note(
            1,
            (0, -260),
            "**Pairwise tournament with a reference** (RewardDance's recipe): a round robin among the "
            "candidates picks the best one as reference; every new candidate is then scored as "
            "P(better than the reference). Load your own images (same size) into the LoadImage nodes.\n\n"
            + REWARD_MODEL_NOTE,
        ),
        N(2, "LoadImage", (0, 0), {"image": "example.png"}, size=(300, 320)),
        N(3, "LoadImage", (0, 360), {"image": "example.png"}, size=(300, 320)),
        N(4, "LoadImage", (0, 720), {"image": "example.png"}, size=(300, 320)),
        N(5, "ImageBatch", (340, 0), links={"image1": (2, 0), "image2": (3, 0)}, size=(200, 50)),
        N(6, "ImageBatch", (340, 120), links={"image1": (5, 0), "image2": (4, 0)}, size=(200, 50)),
        loader(7, (340, 260)),
        N(
            8,
            "RewardDanceTournament",
            (720, 0),
            {"text": cat},
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
            {"text": cat},
            {"reward_model": (7, 0), "candidates": (6, 0), "reference": (9, 0)},
            size=(340, 300),
        ),
        N(11, "PreviewImage", (1480, 0), links={"images": (10, 2)}, size=(400, 420)),
    ]
    remote = [
        note(
            1,
            (0, -260),
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
            {"text": cat},
            {"reward_model": (3, 0), "images": (2, 0), "criteria": (4, 0)},
            size=(360, 320),
        ),
    ]
    score = [
        note(
            1,
            (0, -260),
            '**Score images**: P("yes") that each image matches the prompt, drawn on a preview and '
            "output as FLOAT scores and a ranked summary.\n\n" + REWARD_MODEL_NOTE,
        ),
        N(2, "LoadImage", (0, 0), {"image": "example.png"}, size=(300, 320)),
        loader(3, (0, 360)),
        N(
            4,
            "RewardDanceScoreImages",
            (360, 0),
            {"text": cat},
            {"reward_model": (3, 0), "images": (2, 0)},
            size=(360, 320),
        ),
    ]
    search_note = (
        "The NOISE output replays the best result through SamplerCustomAdvanced with the same guider "
        "and sigmas and the euler sampler (for best_of_n, random_search and zero_order; search_over_paths "
        "returns its result as the LATENT).\n\n" + REWARD_MODEL_NOTE
    )
    search_sdxl = [
        note(
            1,
            (0, -260),
            "**Reward noise search (SDXL)**: spend 64 denoiser calls (8 candidates x 8 steps) finding the "
            "initial noise the reward model likes best.\n\nCheckpoint: `sd_xl_base_1.0.safetensors` in "
            "`models/checkpoints/`.\n\n" + search_note,
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
    search_flux = [
        note(
            1,
            (0, -260),
            "**Reward noise search with a flow model (Flux.1-dev)**: search over paths (RewardDance's "
            "inference-time scaling): trajectories branch at intermediate steps and the reward model "
            "prunes them on their predicted clean images.\n\nFiles: as in best_of_n_flux.\n\n" + search_note,
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
    train_prompts = "\n".join(TRAIN_PROMPTS)
    training = [
        note(
            1,
            (0, -300),
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
                    "url": hf + "Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors",
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
                "rank": 16,
                "alpha": 16.0,
                "group_size": 4,
                "sampler_steps": 20,
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
    return {
        "reward_lora_training_sd15": training,
        "best_of_n_sdxl": sdxl,
        "best_of_n_flux": flux,
        "best_of_n_wan_video": wan,
        "tournament_with_reference": tournament,
        "remote_backend_scoring": remote,
        "score_images": score,
        "noise_search_sdxl": search_sdxl,
        "noise_search_flux": search_flux,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    objects = json.loads(Path(argv[0]).read_text())
    for name, nodes in specs().items():
        ui, api = build(name, nodes, objects)
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
        print(f"workflows/{name}.json, workflows/api/{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
