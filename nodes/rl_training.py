"""Reward LoRA Trainer: fine-tune a LoRA of the MODEL with RL (RAFT, Flow-GRPO, ReFL, DiffusionNFT) against the
reward model, inside ComfyUI's own sampling (its conditioning, CFG, model management and wrappers; nft's samples
come from the ComfyUI sampler the user picks).

How it fits ComfyUI:
- ComfyUI creates weights in inference mode, which autograd cannot use, and the user's MODEL must not change:
  `trainable_copy` (nodes/autograd_copies.py) gives the trainer its own copy of the diffusion model (ordinary tensors, the MODEL's weight
  patches merged in). The LoRA is added to that copy with peft; the copy is the MODEL output.
- All prompts are encoded once and go into one guider under the keys positive_0, positive_1, ... (negative
  shared); one `guider.sample` call hosts the whole run in `TrainingSampler`, so ComfyUI processes the
  conditioning and loads the model once.
- The loop, checkpoints, resume, non-finite guard, log and chart are backend/rl/run.py's `train_rl`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfy.model_management as mm
import comfy.model_sampling
import comfy.samplers
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..backend.dependencies import require
from ..backend.generators.protocol import Generator
from ..backend.media import pil_to_tensor
from ..backend.node_logic import RewardCriteria
from ..backend.rewards import ModelReward
from ..backend.rl.config import RLConfig
from ..backend.rl.curve import CURVE_EVENT, curve_message, earlier_points
from ..backend.rl.export import comfyui_state_dict, save_comfyui_lora
from ..backend.rl.lora import LoraSpec, add_lora, network_family
from ..backend.rl.node_settings import NODE_ALGORITHMS, NodeTraining, output_paths, prompt_lines, step_lora_path
from ..backend.rl.run import train_rl, write_rl_chart
from ..backend.rl.trainers import Policy
from ..backend.score_text import format_score
from .autograd_copies import differentiable_decoder, trainable_copy
from .common import criteria_input, reward_model_input
from .memory import check_models_fit
from .rope_grad import enable_rope_gradients
from .sampler_bridge import TrainingSampler, comfy_sample_clean, sample_in_guider
from .types import TRAINING


def image_tensor(path: Path) -> torch.Tensor:
    """A PNG as an IMAGE [1, H, W, 3] (a blank square when there is none)."""
    from PIL import Image as PILImage

    if not path.is_file():
        return torch.zeros(1, 64, 64, 3)
    return pil_to_tensor(PILImage.open(path))[None]


def live_progress(
    steps: int, run_dir: Path, final: Path, network: torch.nn.Module, family: str, save_every: int, node_id: str | None
) -> Callable[[int, int, dict], None]:
    """After each step: the step's reward numbers to the node's live curve (web/training_curve.js), the reward as
    text on the node, the progress bar with the reward chart as its preview (it also shows loss, KL and clip
    fraction), and a ComfyUI LoRA file at every `save_every` steps."""
    from PIL import Image as PILImage

    bar = comfy.utils.ProgressBar(steps)
    first = [True]

    def update(step: int, total: int, row: dict) -> None:
        text = (
            f"step {step}/{total}: reward {format_score(row['reward_mean'])} (std {format_score(row['reward_std'])}, "
            f"window std {format_score(row['window_std'])})"
        )
        logging.info("RewardDance LoRA trainer: %s", text)
        if save_every and step % save_every == 0:
            save_comfyui_lora(network, step_lora_path(final, step), family, {"step": step})
        if node_id is not None:
            earlier = earlier_points(run_dir / "log.jsonl", step) if first[0] else None
            send_event(CURVE_EVENT, curve_message(node_id, step, total, row, earlier))
            first[0] = False
        send_text(text, node_id)
        chart = write_rl_chart(run_dir / "log.jsonl", run_dir / "chart.png")
        preview = ("PNG", PILImage.open(chart).convert("RGB"), 768) if chart else None
        bar.update_absolute(
            step, total, preview
        )  # raises ComfyUI's interrupt after a Cancel (checkpointed by train_rl)

    return update


def prompt_server() -> Any | None:
    """ComfyUI's running PromptServer (None outside a server, e.g. in-process tests)."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def send_text(text: str, node_id: str | None) -> None:
    """Show a line of text on the node in the browser (when a ComfyUI server is running)."""
    server = prompt_server()
    if node_id is not None and server is not None:
        server.send_progress_text(text, node_id)


def send_event(event: str, data: dict) -> None:
    """Send a JSON message to the browser (when a ComfyUI server is running); the web extension listens for it."""
    server = prompt_server()
    if server is not None:
        server.send_sync(event, data, server.client_id)


def encode(clip: Any, text: str) -> list:
    """CONDITIONING for a text, as CLIPTextEncode makes it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


TRAINER_DESCRIPTION = (
    "RL fine-tuning of a LoRA so the model's images score higher with the reward model. raft: best "
    "of each group, then the usual diffusion loss on it (any model). grpo: Flow-GRPO with SDE "
    "sampling and group-relative advantages (flow models: SD3, Flux, Wan...). refl: the reward's "
    "gradient through the last sampling step (needs a local reward model). nft: DiffusionNFT, a "
    "denoising loss contrasting better and worse samples of each group (any model; its samples come from "
    "sampler_name, any ComfyUI sampler; cfg 1 trains CFG-free as the paper). Files go to "
    "output/<filename_prefix>.safetensors (ComfyUI LoRA), a LoRA every save_every steps, and "
    "<filename_prefix>_run/ (checkpoint, log.jsonl, chart.png). Cancel saves a checkpoint; queue "
    "again with the same settings to resume. Watch the window std in the chart: when it collapses "
    "the model is exploiting the reward (reward hacking)."
)


class RewardLoraTrainer(io.ComfyNode):
    """Fine-tune a LoRA of the MODEL with reinforcement learning against the reward model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceLoraTrainer",
            display_name="Reward LoRA Trainer",
            category=TRAINING,
            description=TRAINER_DESCRIPTION,
            is_experimental=True,
            inputs=[
                io.Model.Input(
                    "model", tooltip="the model to train a LoRA for (it is copied: this MODEL is not changed)"
                ),
                io.Clip.Input("clip", tooltip="encodes the prompts and the negative"),
                io.Vae.Input("vae", tooltip="decodes samples for the reward model"),
                io.Latent.Input(
                    "latent_image", tooltip="an empty latent of batch 1: the size (and frames) to train at"
                ),
                reward_model_input(tooltip="the judge the LoRA learns to please (refl needs a local one)"),
                io.String.Input(
                    "prompts",
                    multiline=True,
                    default="",
                    placeholder="one prompt per line, or the name of a .txt file in ComfyUI's input folder (one per line)",
                    tooltip="the training prompts: one per line, or a .txt file in ComfyUI's input folder",
                ),
                io.String.Input("negative", multiline=True, default="", tooltip="negative prompt (used when cfg > 1)"),
                io.Combo.Input(
                    "algorithm",
                    options=list(NODE_ALGORITHMS),
                    default="raft",
                    tooltip="raft: any model; grpo: flow models (SD3, Flux, Wan); refl: needs a local reward model; "
                    "nft: any model, samples with sampler_name",
                ),
                io.Int.Input("steps", default=100, min=1, max=100000, tooltip="training steps (one prompt per step)"),
                io.Float.Input(
                    "learning_rate", default=1e-4, min=1e-7, max=0.1, step=1e-5, tooltip="the optimizer's step size"
                ),
                io.Int.Input("lora_rank", default=16, min=1, max=256, tooltip="LoRA rank (size of the adapters)"),
                io.Float.Input(
                    "lora_alpha",
                    default=16.0,
                    min=0.1,
                    max=512.0,
                    step=0.1,
                    tooltip="LoRA scale alpha / rank (written into the file, so strength 1 is as trained)",
                ),
                io.Int.Input("group_size", default=4, min=1, max=64, tooltip="images sampled per prompt per step"),
                io.Int.Input("sample_steps", default=20, min=2, max=200, tooltip="sampling steps while training"),
                io.Float.Input(
                    "cfg", default=4.5, min=0.0, max=30.0, step=0.1, tooltip="1.0 for distilled models (Flux dev)"
                ),
                io.Combo.Input(
                    "scheduler",
                    options=list(comfy.samplers.SCHEDULER_NAMES),
                    default="simple",
                    tooltip="the noise schedule for sampling while training",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=False,
                    tooltip="fixed, so queueing again resumes the same run (a new seed needs a new filename_prefix)",
                ),
                io.Int.Input(
                    "save_every",
                    default=25,
                    min=0,
                    max=100000,
                    tooltip="checkpoint and LoRA file every N steps (0: only at the end and on Cancel)",
                ),
                io.String.Input(
                    "filename_prefix",
                    default="loras/rewarddance_lora",
                    tooltip="where the LoRA goes, under ComfyUI's output folder (also names the run folder)",
                ),
                criteria_input(),
                io.Combo.Input(
                    "sampler_name",
                    options=list(comfy.samplers.KSampler.SAMPLERS),
                    default="euler",
                    optional=True,
                    tooltip="nft: the ComfyUI sampler that makes the training samples (any: nft needs only clean "
                    "samples and their rewards); raft, grpo and refl sample with their own Euler / SDE steps",
                ),
            ],
            outputs=[
                io.Model.Output(tooltip="the model with the trained LoRA applied"),
                io.LoraModel.Output(tooltip="the LoRA weights (for Load LoRA Model / Save LoRA)"),
                io.Image.Output(display_name="chart", tooltip="reward mean and windowed std, loss, KL, clip fraction"),
                io.String.Output(
                    display_name="summary", tooltip="steps, held-out reward before and after, speed, LoRA file"
                ),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        model,
        clip,
        vae,
        latent_image: dict,
        reward_model,
        prompts: str,
        negative: str,
        algorithm: str,
        steps: int,
        learning_rate: float,
        lora_rank: int,
        lora_alpha: float,
        group_size: int,
        sample_steps: int,
        cfg: float,
        scheduler: str,
        seed: int,
        save_every: int,
        filename_prefix: str,
        criteria=None,
        sampler_name: str = "euler",
    ) -> io.NodeOutput:
        """Train the LoRA inside one ComfyUI sampling call and save it (Cancel checkpoints; queue again to resume)."""
        require("peft", "The Reward LoRA Trainer node")
        enable_rope_gradients()  # Wan, Flux...: ComfyUI's fused RoPE has no backward of its own
        prompt_list = list(dict.fromkeys(prompt_lines(prompts, [folder_paths.get_input_directory()])))
        samples = training_latent(latent_image)
        training = NodeTraining(
            algorithm, steps, learning_rate, lora_rank, lora_alpha, group_size, sample_steps, seed, save_every
        ).validate()
        check_algorithm(algorithm, reward_model, model)
        sample_clean = comfy_sample_clean(sampler_name) if algorithm == "nft" else None  # checks sampler_name
        check_models_fit(model, "the trainer's copy of MODEL", reward_model, "model")
        run_dir, final = output_paths(folder_paths.get_output_directory(), filename_prefix)
        config = training.config(prompt_list, run_dir)
        trainable, policy = lora_policy(
            model, reward_model, prompt_list, algorithm, LoraSpec(lora_rank, lora_alpha), seed, criteria
        )
        policy.sample_clean = sample_clean
        progress = live_progress(
            steps, run_dir, final, policy.network, policy.family, save_every, getattr(cls.hidden, "unique_id", None)
        )
        decoder = differentiable_decoder(vae) if algorithm == "refl" else None
        sampler = TrainingSampler(prompt_list, training_run(config, policy, progress), vae, scheduler, decoder)
        guider = prompts_guider(trainable, clip, prompt_list, negative, cfg)
        sigmas = comfy.samplers.calculate_sigmas(trainable.get_model_object("model_sampling"), scheduler, sample_steps)
        sample_in_guider(guider, sampler, samples, sigmas, seed, reward_model, preload=[trainable])
        policy.network.requires_grad_(False)
        raise_if_cancelled(sampler.summary, policy, final)
        save_comfyui_lora(
            policy.network,
            final,
            policy.family,
            {"algorithm": algorithm, "steps": sampler.summary["step"], "prompts": len(prompt_list)},
        )
        chart = image_tensor(run_dir / "chart.png")
        state_dict = comfyui_state_dict(policy.network, policy.family)
        return io.NodeOutput(trainable, state_dict, chart, describe(sampler.summary, final))


def training_latent(latent_image: dict) -> torch.Tensor:
    """The LATENT's samples: one empty latent, whose size (and frames) the LoRA is trained at."""
    samples = latent_image["samples"]
    if samples.shape[0] != 1:
        raise ValueError(
            f"latent_image: give an empty latent of batch 1 (the training size), got batch {samples.shape[0]}"
        )
    return samples


def check_algorithm(algorithm: str, reward_model: Any, model: Any) -> None:
    """refl needs a local, unquantised reward model's gradient; grpo's SDE needs a flow model."""
    if algorithm == "refl" and not reward_model.differentiable:
        raise ValueError(
            "algorithm: refl needs the reward's gradient, which a remote or quantised (int8/nf4) reward model "
            "cannot give; use raft or grpo with it, or load the reward model locally with quantization none"
        )
    if algorithm == "grpo" and not isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST):
        raise ValueError(
            "algorithm: grpo's SDE is for flow models (SD3, Flux, Wan...); use raft or refl for SD1.x/SDXL"
        )


def lora_policy(
    model: Any,
    reward_model: Any,
    prompts: list[str],
    algorithm: str,
    spec: LoraSpec,
    seed: int,
    criteria: RewardCriteria | None,
) -> tuple[Any, Policy]:
    """A trainable copy of the MODEL with a fresh LoRA, and the policy that trains it against the reward model
    (one reward per prompt; its generators are set once ComfyUI's sampling starts)."""
    trainable = trainable_copy(model)
    network = trainable.model.diffusion_model
    family = network_family(network)
    with torch.inference_mode(False):
        params = add_lora(network, spec, seed=seed)
    options = (criteria or RewardCriteria()).reward_options()
    rewards = {p: ModelReward(reward_model, p, options=options, differentiable=algorithm == "refl") for p in prompts}
    return trainable, Policy(None, rewards.__getitem__, network, params, family=family)


def training_run(
    config: RLConfig, policy: Policy, progress: Callable[[int, int, dict], None]
) -> Callable[[Callable[[str], Generator]], dict]:
    """The whole RL run given the prompts' generators: backend/rl/run.py's loop, stopped by ComfyUI's Cancel."""

    def run(generator_for: Callable[[str], Generator]) -> dict:
        policy.generator_for = generator_for
        return train_rl(
            config,
            policy,
            progress=progress,
            should_stop=mm.processing_interrupted,
            interrupts=(KeyboardInterrupt, mm.InterruptProcessingException),
        )

    return run


def prompts_guider(trainable: Any, clip: Any, prompts: list[str], negative: str, cfg: float) -> Any:
    """One CFGGuider holding every prompt's conditioning (positive_0, positive_1, ...) and the shared negative."""
    guider = comfy.samplers.CFGGuider(trainable)
    guider.inner_set_conds(
        {
            "negative": encode(clip, negative),
            **{f"positive_{i}": encode(clip, p) for i, p in enumerate(prompts)},
        }
    )
    guider.set_cfg(cfg)
    return guider


def raise_if_cancelled(summary: dict, policy: Policy, final: Path) -> None:
    """After a Cancel: save the LoRA of the last finished step, say how to resume, and stop the graph."""
    if not summary.get("interrupted"):
        return
    step = summary["step"]
    path = save_comfyui_lora(policy.network, step_lora_path(final, step), policy.family, {"step": step})
    logging.warning(
        "RewardDance LoRA trainer: cancelled at step %d; checkpoint in %s, LoRA %s. Queue again with the "
        "same settings to resume.",
        step,
        summary["checkpoint"],
        path,
    )
    raise mm.InterruptProcessingException()


def describe(summary: dict, final: Path) -> str:
    """The summary STRING: reward before and after on held-out seeds, speed, files."""
    before, after = summary.get("reward_before"), summary.get("reward_after")
    lines = [
        f"{summary['algorithm']}: {summary['step']} steps" + (" (resumed)" if summary.get("resumed") else ""),
        f"held-out reward {format_score(before)} -> {format_score(after)}"
        if before is not None
        else f"held-out reward after: {format_score(after)}",
        f"skipped updates (non-finite): {summary.get('skipped_updates', 0)}",
        f"LoRA: {final}",
    ]
    if summary.get("steps_per_second"):
        lines.insert(2, f"{summary['steps_per_second']:.3f} steps/s")
    return "\n".join(lines)
