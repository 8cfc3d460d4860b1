"""Reward Noise Search: run a noise-search algorithm inside ComfyUI's sampling (guider + sigmas; the sampler
bridge is nodes/sampler_bridge.py), return the best latent, its image, and a NOISE that replays it in
SamplerCustomAdvanced with the `euler` sampler.

noise_gradient (ReNO-style) back-propagates the reward through the decode and every sampling step into the
initial noise. ComfyUI creates weights in inference mode, which autograd cannot save for backward, so for the
search only it samples with a trainable copy of the guider's diffusion model (nodes/rl_training.py's
`trainable_copy`: one more model in RAM/VRAM, freed afterwards) and decodes with a private VAE copy.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..backend import node_logic as nl
from ..backend.rewards import ModelReward
from ..backend.score_text import format_score
from ..backend.search.algorithms import ALGORITHMS, BestSoFar, Progress
from ..backend.search.pruning import DEFAULT_KEEP_FRACTION, pruning_for
from .autograd_copies import differentiable_decoder, trainable_copy
from .common import criteria_input, preview_ui, prompt_input, reward_model_input
from .memory import check_models_fit, unload_patcher
from .rope_grad import enable_rope_gradients
from .sampler_bridge import SearchSampler, sample_in_guider
from .types import SEARCH

NODE_ALGORITHMS = list(ALGORITHMS)
PRUNABLE = ("best_of_n", "random_search")
BRANCHED = ("search_over_paths", "tree")  # results that also depend on noise drawn along the way


class FoundNoise:
    """A NOISE for SamplerCustomAdvanced that replays the searched initial noise."""

    def __init__(self, noise: torch.Tensor, seed: int, replays: bool = True):
        self.noise = noise.detach().cpu()
        self.seed = seed
        self.replays = (
            replays  # False for search_over_paths and tree: their results also depend on noise drawn on the way
        )

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        shape = tuple(input_latent["samples"].shape)
        if tuple(self.noise.shape) != shape:
            raise ValueError(
                f"noise: the searched noise has shape {tuple(self.noise.shape)} but the latent is {shape}; "
                "use the same empty latent (batch 1) the search used"
            )
        if not self.replays:
            logging.warning(
                "RewardDance: this NOISE is the root noise of the best search_over_paths / tree trajectory; "
                "sampling from it alone does not reproduce the searched latent (use the LATENT output)"
            )
        return self.noise.clone()


def check_algorithm(algorithm: str, reward_model: Any) -> None:
    """noise_gradient needs the reward's gradient, which a remote or quantised reward model cannot give."""
    if algorithm == "noise_gradient" and not getattr(reward_model, "differentiable", False):
        raise ValueError(
            "algorithm: noise_gradient needs the reward's gradient, which a remote or quantised (int8/nf4) reward "
            "model cannot give; choose another algorithm (e.g. search_over_paths or zero_order), or load the reward "
            "model locally with quantization none"
        )


def pruning_options(algorithm: str, prune_at: float, keep_fraction: float, steps: int) -> dict:
    """The search's early-pruning keywords from the node's inputs (prune_at 0: none), checked before sampling."""
    if prune_at == 0:
        return {}
    if algorithm not in PRUNABLE:
        raise ValueError(
            f"prune_at: early pruning works with {' or '.join(PRUNABLE)}, not {algorithm}; set prune_at to 0"
        )
    if prune_at >= 1 and prune_at != int(prune_at):
        raise ValueError(
            f"prune_at must be a whole step index (1 to {steps - 1}) or a fraction of the steps below 1, got {prune_at}"
        )
    step = int(prune_at) if prune_at >= 1 else float(prune_at)
    pruning_for(step, keep_fraction, steps)  # raises naming prune_at / keep_fraction
    return {"prune_at": step, "keep_fraction": keep_fraction}


@contextlib.contextmanager
def search_models(algorithm: str, guider: Any, vae: Any) -> Iterator[tuple[Any, Callable | None, list]]:
    """(guider, decoder, models to preload) for the search. For noise_gradient: the guider over a trainable copy
    of its model and a private VAE decoder (autograd-usable weights), both freed when the search ends."""
    if algorithm != "noise_gradient":
        yield guider, None, []
        return
    enable_rope_gradients()  # Wan, Flux...: ComfyUI's fused RoPE has no backward of its own
    trainable = trainable_copy(guider.model_patcher)
    gradient_guider = copy.copy(guider)  # same conditioning, cfg and options; samples the copy
    gradient_guider.model_patcher = trainable
    try:
        yield gradient_guider, differentiable_decoder(vae), [trainable]
    finally:
        unload_patcher(lambda loaded: loaded is trainable)  # off the GPU now; its RAM goes with the node's locals


def preview_progress(budget: int) -> Progress:
    """Progress bar updates with a preview of the best image each time it improves.

    While a cancel is pending the bar is left alone (ComfyUI's progress hook would raise at once); the
    search sees `processing_interrupted()` through `should_stop` and returns the best so far.
    """
    from PIL import Image as PILImage

    bar = comfy.utils.ProgressBar(budget)
    last = {"score": None}

    def update(spent: int, total: int, best: BestSoFar) -> None:
        if mm.processing_interrupted():
            return
        preview = None
        if best.score != last["score"]:
            last["score"] = best.score
            first = best.image[0] if best.image.ndim == 4 else best.image[0, 0]  # a video previews its first frame
            arr = (first.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
            preview = ("JPEG", PILImage.fromarray(arr), 512)
        bar.update_absolute(min(spent, total), total, preview)

    return update


class RewardNoiseSearch(io.ComfyNode):
    """Search the initial noise (or paths) the reward model likes best, within a budget of denoiser calls."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RewardDanceNoiseSearch",
            display_name="Reward Noise Search",
            category=SEARCH,
            description="Inference-time scaling: spend `budget` denoiser calls searching for the initial noise (or the "
            "paths) the reward model scores highest. For best_of_n, random_search, zero_order and "
            "noise_gradient the NOISE output replays the best result in SamplerCustomAdvanced with the same "
            "guider, sigmas and the euler sampler. best_of_n and random_search can prune early (prune_at). "
            "Cancel returns the best found so far.",
            inputs=[
                io.Guider.Input("guider", tooltip="the model and conditioning to sample with (e.g. CFGGuider)"),
                io.Sigmas.Input("sigmas", tooltip="the noise schedule (e.g. BasicScheduler)"),
                io.Latent.Input(
                    "latent_image",
                    tooltip="an empty latent of batch 1 (image, or video: the reward then "
                    "scores the decoded clip as a video)",
                ),
                io.Vae.Input("vae", tooltip="decodes each candidate for the reward model"),
                reward_model_input(),
                prompt_input("the prompt the image should show"),
                io.Combo.Input(
                    "algorithm",
                    options=NODE_ALGORITHMS,
                    default="search_over_paths",
                    tooltip="search_over_paths branches and prunes trajectories (RewardDance's choice); tree is "
                    "diffusion tree search (DTS*: branches where the reward's backed-up values lead); their result "
                    "is the LATENT output (the NOISE output replays the other algorithms). "
                    "noise_gradient: gradient ascent of the reward on the initial noise through every step, for "
                    "few-step models; holds a second copy of the model (needs a local reward model)",
                ),
                io.Int.Input("budget", default=64, min=1, max=100000, tooltip="denoiser calls to spend"),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="seed of the search's random draws",
                ),
                criteria_input(),
                io.Float.Input(
                    "prune_at",
                    default=0.0,
                    min=0.0,
                    max=1000.0,
                    step=0.05,
                    optional=True,
                    tooltip="early pruning for best_of_n and random_search: 0 off; a fraction of the steps below 1 "
                    "(e.g. 0.25) or a step index (e.g. 2): every candidate is sampled to that step, scored on its "
                    "predicted clean image, and only the top keep_fraction finished, so more candidates fit the "
                    "budget",
                ),
                io.Float.Input(
                    "keep_fraction",
                    default=DEFAULT_KEEP_FRACTION,
                    min=0.01,
                    max=1.0,
                    step=0.05,
                    optional=True,
                    tooltip="with prune_at: the fraction of candidates finished (at least one; 1 is the plain search)",
                ),
            ],
            outputs=[
                io.Latent.Output(tooltip="the best latent found"),
                io.Image.Output(tooltip="the best latent decoded (as it was scored)"),
                io.Noise.Output(
                    tooltip="replays the best result in SamplerCustomAdvanced with the same guider, sigmas and the "
                    "euler sampler (not for search_over_paths or tree)"
                ),
                io.String.Output(display_name="summary", tooltip="the best score, candidates and calls spent"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        guider,
        sigmas,
        latent_image: dict,
        vae,
        reward_model,
        text: str,
        algorithm: str,
        budget: int,
        seed: int,
        criteria=None,
        prune_at: float = 0.0,
        keep_fraction: float = DEFAULT_KEEP_FRACTION,
    ) -> io.NodeOutput:
        nl.check_prompt(text)
        samples = latent_image["samples"]
        if samples.shape[0] != 1:
            raise ValueError(f"latent_image: the search makes one image; pass a batch of 1, got {samples.shape[0]}")
        check_algorithm(algorithm, reward_model)
        options = pruning_options(algorithm, prune_at, keep_fraction, len(sigmas) - 1)
        if algorithm == "noise_gradient":
            check_models_fit(guider.model_patcher, "noise_gradient's copy of the model", reward_model, "algorithm")
        reward = ModelReward(
            reward_model,
            text,
            options=(criteria or nl.RewardCriteria()).reward_options(),
            differentiable=reward_model.differentiable,
        )
        with search_models(algorithm, guider, vae) as (search_guider, decoder, preload):
            sampler = SearchSampler(
                algorithm,
                reward,
                budget,
                seed,
                vae,
                progress=preview_progress(budget),
                should_stop=mm.processing_interrupted,
                decoder=decoder,
                options=options,
            )
            latent = sample_in_guider(search_guider, sampler, samples, sigmas, seed, reward_model, preload=preload)
            sampler.denoiser = None  # it holds the sampled model
        result = sampler.result
        image = result.image.detach()  # decoded when it was scored (a pending Cancel would stop a new decode)
        image = image.reshape(-1, *image.shape[-3:])  # a video's frames as an IMAGE batch
        out = dict(latent_image)
        out["samples"] = latent.detach().to(mm.intermediate_device())
        scores = [c.score for c in result.history]
        summary = (
            f"{algorithm}: best score {format_score(result.score)} of {len(scores)} candidates; "
            f"{result.denoiser_calls} denoiser calls, {result.scorer_calls} scorer calls"
            + (f", {len(result.early)} screened early (prune_at {prune_at:g})" if result.early else "")
            + (" (stopped early: best so far)" if sampler.stopped_early else "")
        )
        row = {"index": 0, "name": "best", "score": result.score, "rank": 1}
        data = preview_ui(cls, image.detach().float().cpu(), [row])
        noise = FoundNoise(result.noise, seed, replays=algorithm not in BRANCHED)
        return io.NodeOutput(out, image.detach().float().cpu(), noise, summary, ui=data)
