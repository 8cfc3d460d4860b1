"""Load Reward Model (local, ComfyUI-managed memory; hub judges downloaded on first use) and Load Remote Reward
Model (a `rewarddance serve` URL).

Their node ids (RewardDanceModelLoader, RewardDanceRemoteModel) stay as they were, so saved workflows load."""

from __future__ import annotations

import logging
from collections.abc import Callable

import folder_paths
from comfy_api.latest import io

from ..backend.devices import ATTENTION, DTYPE_CHOICES
from ..backend.hub_download import download_checkpoint
from ..backend.reward_model_choice import (
    DOWNLOAD_MARK,
    LEGACY_HUB_CHOICE,
    PRESETS,
    installed_checkpoints,
    model_options,
    resolve,
)
from ..backend.scoring.judges import JUDGES
from ..backend.vlm.quantization import QUANTIZATIONS
from . import service
from .memory import device_choices, load_managed
from .progress import progress_for
from .types import CATEGORY, RewardModelType

HUB_CHOICE = LEGACY_HUB_CHOICE  # accepted from workflows saved by release 0.1; no longer listed
DTYPE_OPTIONS = ["default" if d == "auto" else d for d in DTYPE_CHOICES]  # ComfyUI's word for "let it choose"


def reward_model_roots() -> list[str]:
    """Every registered reward_models folder (the first one receives downloads)."""
    return list(folder_paths.get_folder_paths("reward_models"))


def local_checkpoints() -> list[str]:
    """Checkpoint directories (with a config.json) under every registered reward_models folder."""
    return installed_checkpoints(reward_model_roots())


def download_progress() -> Callable[[int, int], None]:
    """ComfyUI's progress bar (and Cancel) for a download: the total arrives with the first update."""
    return progress_for(1)


def checkpoint_path(choice: str, hub_id: str) -> str:
    """The directory to load for a `model` choice and `hub_id` text, downloading a hub checkpoint first if missing."""
    resolved = resolve(choice, hub_id, reward_model_roots())
    if resolved.needs_download:
        logging.info("RewardDance: downloading %s into %s", resolved.hub_id, resolved.path)
        download_checkpoint(resolved.hub_id, resolved.path, download_progress())
    return str(resolved.path)


class RewardModelLoader(io.ComfyNode):
    """Load a VLM reward model once; ComfyUI's model management moves it on and off the GPU."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        options = model_options(local_checkpoints())
        return io.Schema(
            node_id="RewardDanceModelLoader",
            display_name="Load Reward Model",
            category=CATEGORY,
            description='Load a Qwen2/2.5/3-VL or InternVL chat model as a generative reward model (P("yes")). '
            f"Pick a checkpoint folder from models/reward_models/ or a judge marked '{DOWNLOAD_MARK.strip()}' "
            "(downloaded there on first use, with a progress bar), or type any hub id. 'Unload models' frees it.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=options,
                    default=options[0],
                    tooltip="a checkpoint folder in models/reward_models/, or a judge marked "
                    f"'{DOWNLOAD_MARK.strip()}' ({', '.join(PRESETS)}): downloaded into "
                    "models/reward_models/<name> the first time it runs, then listed by its folder name",
                ),
                io.String.Input(
                    "hub_id",
                    default="",
                    tooltip="optional: another hub id (owner/name, downloaded into models/reward_models/<name> "
                    "on first use) or a checkpoint folder path; when filled in it is used instead of model",
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
                io.Combo.Input(
                    "quantization",
                    options=list(QUANTIZATIONS),
                    default="none",
                    optional=True,
                    tooltip="int8 / nf4: load the language model's linear layers and token tables 8- or 4-bit with "
                    "bitsandbytes (pip install bitsandbytes; the answer tokens' rows stay exact): about 0.54x / "
                    "0.34x the weights of a 7B judge; it then stays on "
                    "its device and gives no gradients (refl and noise_gradient need none)",
                ),
                io.Combo.Input(
                    "judge",
                    options=list(JUDGES),
                    default="yes_no",
                    optional=True,
                    tooltip='how the checkpoint is asked and read: yes_no (P("yes"), any chat VLM) or '
                    "unifiedreward (UnifiedReward checkpoints: their own prompts, the 1-5 score and the pairwise "
                    "verdict read as probabilities); scores stay in [0, 1]",
                ),
            ],
            outputs=[RewardModelType.Output(tooltip="connect to the reward_model input of any RewardDance node")],
        )

    @classmethod
    def validate_inputs(cls, model: str) -> bool | str:
        """Accept any installed folder, preset, hub id or path as model, so saved workflows load whatever is
        installed (and ComfyUI's list check is skipped); downloads and hub_id are checked when the node runs."""
        try:
            resolve(model, "", reward_model_roots())
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(
        cls,
        model: str,
        hub_id: str,
        dtype: str,
        device: str,
        attention: str,
        max_pixels: int,
        keep_loaded: bool = True,
        quantization: str = "none",
        judge: str = "yes_no",
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
            quantization=quantization,
            judge=judge,
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
