"""The ComfyUI sampler bridge: a whole noise search or RL run hosted inside one `guider.sample` call, so
ComfyUI processes the conditioning, applies its model wrappers and loads the model once.

- `ComfyDenoiser` is the generator protocol over that call (the guider's CFG denoiser at its sigmas);
  `PromptDenoiser` is the trainer's variant (one prompt's conditioning, any number of steps).
- `SearchSampler` and `TrainingSampler` are the `comfy.samplers.Sampler`s whose `sample` runs the engine.
- `comfy_sample_clean` samples one prompt's clean latents with any of ComfyUI's samplers (dpmpp_2m, uni_pc, ...)
  over a `PromptDenoiser`: nft's `Policy.sample_clean` in the trainer node.
- `sample_in_guider` runs such a sampler with ordinary (not inference-mode) tensors and gradients on, while
  the reward model is held.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import comfy.model_management as mm
import comfy.model_sampling
import comfy.samplers
import torch

from ..backend.holding import holding
from ..backend.rewards import Reward
from ..backend.search.algorithms import ALGORITHMS, BestSoFar, Progress, SearchResult, StopCheck


class ComfyDenoiser:
    """The generator protocol over one ComfyUI sampling call: the guider's CFG denoiser at the given sigmas."""

    def __init__(
        self,
        model_wrap: Any,
        model_k: Any,
        extra_args: dict,
        sigmas: torch.Tensor,
        latent_image: torch.Tensor,
        max_denoise: bool,
        vae: Any,
        decoder: Callable | None = None,
    ):
        self.model_k, self.extra_args, self._sigmas, self.vae = model_k, extra_args, sigmas, vae
        self.decoder = decoder  # a differentiable decode (a private VAE copy), or None for vae.decode
        self.inner = model_wrap.inner_model
        # latents -> the VAE's space; with a differentiable decode, through a latent format autograd can use
        self.latent_out = (
            plain_latent_format(self.inner.latent_format).process_out if decoder else self.inner.process_latent_out
        )
        self.model_sampling = self.inner.model_sampling
        self.parameterization = "flow" if isinstance(self.model_sampling, comfy.model_sampling.CONST) else "eps"
        self.latent_image = latent_image
        self.max_denoise = max_denoise
        self.noise_shape = tuple(latent_image.shape[1:])
        self.device = latent_image.device

    def sigmas(self, steps: int) -> torch.Tensor:
        if steps != len(self._sigmas) - 1:
            raise ValueError(f"this sampling call has {len(self._sigmas) - 1} steps, not {steps}")
        return self._sigmas

    def start(self, noise: torch.Tensor, sigma_max: torch.Tensor) -> torch.Tensor:
        latent = self.latent_image.expand(noise.shape[0], *self.latent_image.shape[1:])
        return self.model_sampling.noise_scaling(sigma_max, noise, latent, self.max_denoise)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model_k(x, sigma * x.new_ones([x.shape[0]]), **self.extra_args)

    def final(self, latents: torch.Tensor) -> torch.Tensor:
        """Sampler-space latents -> the LATENT ComfyUI nodes pass around."""
        return self.latent_out(self.model_sampling.inverse_noise_scaling(self._sigmas[-1], latents))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images [B, H, W, 3], or videos [B, T, H, W, 3] for video latents (the reward then scores videos)."""
        if self.decoder is not None:
            return self.decoder(self.final(latents))
        return self.vae.decode(self.final(latents))


class SearchSampler(comfy.samplers.Sampler):
    """A ComfyUI sampler whose `sample` runs a whole noise search and returns the best latent."""

    def __init__(
        self,
        algorithm: str,
        reward: Reward,
        budget: int,
        seed: int,
        vae: Any,
        progress: Progress,
        should_stop: StopCheck,
        decoder: Callable | None = None,
        options: dict | None = None,
    ):
        self.algorithm, self.reward, self.budget, self.seed = algorithm, reward, budget, seed
        self.options = dict(options or {})  # the algorithm's own keywords (e.g. prune_at, keep_fraction)
        self.vae, self.progress, self.should_stop, self.decoder = vae, progress, should_stop, decoder
        self.result: SearchResult | None = None
        self.best: BestSoFar | None = None
        self.stopped_early = False
        self.denoiser: ComfyDenoiser | None = None

    def track(self, spent: int, total: int, best: BestSoFar) -> None:
        """Remember the best so far (kept if Cancel cuts the search short), then report progress."""
        self.best = best
        self.progress(spent, total, best)

    def sample(
        self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        extra_args["denoise_mask"] = denoise_mask
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        max_denoise = self.max_denoise(model_wrap, sigmas)
        self.denoiser = ComfyDenoiser(
            model_wrap, model_k, extra_args, sigmas, latent_image, max_denoise, self.vae, self.decoder
        )
        try:
            self.result = ALGORITHMS[self.algorithm](
                self.denoiser,
                self.reward,
                len(sigmas) - 1,
                self.budget,
                seed=self.seed,
                progress=self.track,
                should_stop=self.should_stop,
                **self.options,
            )
        except mm.InterruptProcessingException:
            if self.best is None:
                raise  # cancelled before anything was scored
            b = self.best  # ComfyUI's layers raise on Cancel mid-forward: return the best found so far
            self.result = SearchResult(b.latent, b.noise, b.image, b.score, stopped=True)
        self.stopped_early = self.result.stopped
        return self.model_sampling_out(model_wrap, sigmas, self.result.latent)

    @staticmethod
    def model_sampling_out(model_wrap: Any, sigmas: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return model_wrap.inner_model.model_sampling.inverse_noise_scaling(sigmas[-1], latent)


class PromptDenoiser(ComfyDenoiser):
    """The generator protocol for one training prompt: CFG between its conditioning and the negative, at any
    number of steps of the chosen scheduler."""

    def __init__(
        self,
        model_wrap: Any,
        key: str,
        extra_args: dict,
        sigmas: torch.Tensor,
        latent_image: torch.Tensor,
        max_denoise: bool,
        vae: Any,
        scheduler: str,
        decoder: Callable | None,
    ):
        super().__init__(model_wrap, None, extra_args, sigmas, latent_image, max_denoise, vae, decoder)
        self.guider, self.key, self.scheduler = model_wrap, key, scheduler

    def sigmas(self, steps: int) -> torch.Tensor:
        return comfy.samplers.calculate_sigmas(self.model_sampling, self.scheduler, steps).to(self.device)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        conds = self.guider.conds
        return comfy.samplers.sampling_function(
            self.inner,
            x,
            sigma * x.new_ones([x.shape[0]]),
            conds.get("negative"),
            conds[self.key],
            self.guider.cfg,
            model_options=self.extra_args["model_options"],
            seed=self.extra_args.get("seed"),
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.decoder is not None:
            return self.decoder(self.latent_out(latents))  # differentiable (ReFL)
        return super().decode(latents)


class PromptModel:
    """A `PromptDenoiser` in the shape ComfyUI's samplers call a guider: `model(x, sigma, model_options=..., seed=...)`
    -> x0, with `inner_model` the BaseModel (its model_sampling scales the noise)."""

    def __init__(self, denoiser: PromptDenoiser):
        self.denoiser, self.inner_model = denoiser, denoiser.inner

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None, seed=None):
        d = self.denoiser
        conds = d.guider.conds
        options = d.extra_args["model_options"] if model_options is None else model_options
        return comfy.samplers.sampling_function(
            d.inner, x, sigma, conds.get("negative"), conds[d.key], d.guider.cfg, model_options=options, seed=seed
        )


def comfy_sample_clean(sampler_name: str) -> Callable[[PromptDenoiser, torch.Tensor, int], torch.Tensor]:
    """(denoiser, unit noise [k, ...], steps) -> clean latents in the sampler's space, sampled by ComfyUI's sampler
    `sampler_name` at the denoiser's scheduler, as KSampler would (the samplers that discard the penultimate sigma
    get steps + 1 sigmas, that one dropped)."""
    if sampler_name not in comfy.samplers.KSampler.SAMPLERS:
        raise ValueError(
            f"sampler_name must be one of ComfyUI's samplers ({', '.join(comfy.samplers.KSampler.SAMPLERS)}), "
            f"got {sampler_name!r}"
        )
    sampler = comfy.samplers.sampler_object(sampler_name)
    discard = sampler_name in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS

    def sample_clean(denoiser: PromptDenoiser, noise: torch.Tensor, steps: int) -> torch.Tensor:
        sigmas = denoiser.sigmas(steps + 1 if discard else steps)
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        latent = denoiser.latent_image.expand(noise.shape[0], *denoiser.latent_image.shape[1:])
        extra_args = dict(denoiser.extra_args)  # KSAMPLER.sample writes its denoise_mask into it
        return sampler.sample(PromptModel(denoiser), sigmas, extra_args, None, noise, latent, None, True)

    return sample_clean


def plain_latent_format(latent_format: Any) -> Any:
    """A copy of a latent format whose tensors (e.g. Wan's mean and std, made in inference mode) autograd can use."""
    plain = copy.copy(latent_format)
    with torch.inference_mode(False):
        for name, value in vars(latent_format).items():
            if isinstance(value, torch.Tensor):
                setattr(plain, name, value.clone())
    return plain


class TrainingSampler(comfy.samplers.Sampler):
    """A ComfyUI sampler whose `sample` runs the whole RL run (the conditioning of every prompt is processed)."""

    def __init__(
        self,
        prompts: list[str],
        run: Callable[[Callable[[str], Any]], dict],
        vae: Any,
        scheduler: str,
        decoder: Callable | None,
    ):
        self.keys = {p: f"positive_{i}" for i, p in enumerate(prompts)}
        self.run, self.vae, self.scheduler, self.decoder = run, vae, scheduler, decoder
        self.summary: dict = {}

    def sample(
        self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        max_denoise = self.max_denoise(model_wrap, sigmas)
        generators = {
            p: PromptDenoiser(
                model_wrap, key, extra_args, sigmas, latent_image, max_denoise, self.vae, self.scheduler, self.decoder
            )
            for p, key in self.keys.items()
        }
        self.summary = self.run(generators.__getitem__)
        return latent_image


def sample_in_guider(
    guider: Any,
    sampler: comfy.samplers.Sampler,
    samples: torch.Tensor,
    sigmas: torch.Tensor,
    seed: int,
    reward_model: Any,
    preload: Sequence[Any] = (),
) -> torch.Tensor:
    """Run `sampler` through `guider` from the LATENT `samples` (zero noise: the sampler makes its own), outside
    inference mode with gradients on and the reward model held; `preload` models are loaded fully first.

    `samples` and `sigmas` are cloned there: ComfyUI makes them in inference mode, and an inference tensor
    cannot be saved for backward (the noise gradient multiplies the noise by the sigmas)."""
    with holding(reward_model), torch.inference_mode(False), torch.enable_grad():
        samples, sigmas = samples.clone(), sigmas.clone()
        if preload:
            mm.load_models_gpu(list(preload), force_full_load=True)
        return guider.sample(torch.zeros_like(samples), samples, sampler, sigmas, seed=seed)
