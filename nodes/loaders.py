"""Load Reward Model (local, ComfyUI-managed memory) and Load Remote Reward Model (a `rewarddance serve` URL).

Their node ids (RewardDanceModelLoader, RewardDanceRemoteModel) stay as they were, so saved workflows load."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..backend.devices import ATTENTION, DTYPE_CHOICES
from . import service
from .memory import device_choices, load_managed
from .types import CATEGORY, RewardModelType

HUB_CHOICE = "(hub id below)"
DEFAULT_HUB_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
DTYPE_OPTIONS = ["default" if d == "auto" else d for d in DTYPE_CHOICES]  # ComfyUI's word for "let it choose"


def local_checkpoints() -> list[str]:
    """Checkpoint directories (with a config.json) under every registered reward_models folder."""
    found = []
    for root in folder_paths.get_folder_paths("reward_models"):
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                if os.path.isfile(os.path.join(root, name, "config.json")):
                    found.append(name)
    return list(dict.fromkeys(found))  # the same folder may be registered twice


def checkpoint_path(choice: str, hub_id: str) -> str:
    """The directory of a listed checkpoint, or the typed hub id / path."""
    if choice == HUB_CHOICE:
        if not hub_id.strip():
            raise ValueError("hub_id: type a hub id such as Qwen/Qwen2.5-VL-7B-Instruct, or pick a local checkpoint")
        return hub_id.strip()
    for root in folder_paths.get_folder_paths("reward_models"):
        path = os.path.join(root, choice)
        if os.path.isfile(os.path.join(path, "config.json")):
            return path
    raise ValueError(f"model: {choice!r} is no longer in models/reward_models; refresh the node")


class RewardModelLoader(io.ComfyNode):
    """Load a VLM reward model once; ComfyUI's model management moves it on and off the GPU."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceModelLoader",
            display_name="Load Reward Model",
            category=CATEGORY,
            description='Load a Qwen2/2.5/3-VL or InternVL chat model as a generative reward model (P("yes")). '
            "Put checkpoint folders in models/reward_models/ or type a hub id. 'Unload models' frees it.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=local_checkpoints() + [HUB_CHOICE],
                    tooltip="a checkpoint folder in models/reward_models/, or the hub id typed below",
                ),
                io.String.Input(
                    "hub_id", default=DEFAULT_HUB_ID, tooltip="hub id or path, used when model is '(hub id below)'"
                ),
                io.Combo.Input(
                    "dtype",
                    options=DTYPE_OPTIONS,
                    default="default",
                    tooltip="default: bf16 on GPUs that support it, else fp32",
                ),
                io.Combo.Input(
                    "device",
                    options=device_choices(),
                    default="default",
                    tooltip="default: the device ComfyUI uses; or the CPU, or one GPU by number",
                ),
                io.Combo.Input(
                    "attention",
                    options=list(ATTENTION),
                    default="sdpa",
                    tooltip="attention kernel (flash_attention_* need their package and a CUDA GPU)",
                ),
                io.Int.Input(
                    "max_pixels",
                    default=0,
                    min=0,
                    max=16384 * 28 * 28,
                    step=28 * 28,
                    tooltip="pixel budget per image (0 = the checkpoint's own); the main speed knob",
                ),
                io.Boolean.Input(
                    "keep_loaded",
                    default=True,
                    tooltip="off: unload the reward model from the GPU after every scoring node "
                    "(frees memory for the generator; reloads each time)",
                ),
            ],
            outputs=[RewardModelType.Output(tooltip="connect to the reward_model input of any RewardDance node")],
        )

    @classmethod
    def execute(
        cls, model: str, hub_id: str, dtype: str, device: str, attention: str, max_pixels: int, keep_loaded: bool = True
    ) -> io.NodeOutput:
        path = checkpoint_path(model, hub_id)
        name = service.model_name(path)
        rm = load_managed(
            path,
            "auto" if dtype == "default" else dtype,
            device,
            attention,
            max_pixels or None,
            keep_loaded,
            on_use=lambda m: service.share(name, m),
            on_detach=service.forget,
        )
        service.share(name, rm)
        return io.NodeOutput(rm)


class RemoteRewardModel(io.ComfyNode):
    """Score through a running `rewarddance serve` backend (same machine or a GPU box next door)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceRemoteModel",
            display_name="Load Remote Reward Model",
            category=CATEGORY,
            description="A reward model served by `rewarddance serve`; every scoring node works with it unchanged.",
            inputs=[
                io.String.Input(
                    "url", default="http://127.0.0.1:8765", tooltip="the address `rewarddance serve` printed"
                ),
                io.String.Input(
                    "token",
                    default="",
                    tooltip="bearer token sent to this URL; prefer leaving this empty and setting $REWARDDANCE_TOKEN "
                    "for ComfyUI (widget values are saved in workflows and image metadata): that one is sent only "
                    "to hosts listed in $REWARDDANCE_TOKEN_HOSTS (default: this machine)",
                ),
                io.String.Input("model_name", default="", tooltip="a model the server configured (empty: its default)"),
                io.Int.Input("timeout_s", default=600, min=1, max=86400, tooltip="seconds to wait for each request"),
            ],
            outputs=[RewardModelType.Output(tooltip="connect to the reward_model input of any RewardDance node")],
        )

    @classmethod
    def execute(cls, url: str, token: str, model_name: str, timeout_s: int) -> io.NodeOutput:
        from ..backend.client import RewardClient

        client = RewardClient(
            url.strip(), token=token.strip() or None, model=model_name.strip() or None, timeout=timeout_s
        )
        client.health()  # fail here, with the URL in the message, rather than in a scoring node
        return io.NodeOutput(client)
