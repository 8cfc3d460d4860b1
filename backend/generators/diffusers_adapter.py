"""The generator protocol over diffusers pipelines: Stable Diffusion 1.x/2.x and SDXL (UNet, epsilon
prediction), SD3 / SD3.5, Flux and Wan 2.x (flow-matching transformers).

The prompt is encoded once, with the pipeline's own `encode_prompt`. Sigmas come from the pipeline's
scheduler configured exactly as the pipeline configures it (spacing, shift, Flux's resolution-dependent
shift), so Euler sampling through an adapter reproduces the pipeline run with its Euler scheduler
(`EulerDiscreteScheduler` / `FlowMatchEulerDiscreteScheduler`; tested on tiny random pipelines).
`denoise` returns x0_hat: for eps models x - sigma * eps(x * c_in, t); for flow models x - sigma * v(x, t).
Classifier-free guidance is applied inside `denoise` (Flux uses its distilled guidance embedding instead).
Latents are the pipeline's own (Flux: the unpacked [C, h, w] grid; packing happens inside `denoise`).
`load_pipeline` also takes a tiny generator directory (`tiny_checkpoint.py`), which `generator_for` passes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..model_sources import download_command, source_problem
from .tiny_checkpoint import is_tiny_generator, load_tiny_generator
from .tiny_flow import TinyFlowGenerator

EPS_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


def generator_for(
    pipe: Any,
    prompt: str,
    negative_prompt: str = "",
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    frames: int | None = None,
) -> Any:
    """The adapter for a loaded pipeline (by its class), with the family's default guidance when none is given.

    A TinyFlowGenerator (what `load_pipeline` returns for a tiny generator directory) is returned unchanged:
    it is unconditional, so the prompt and negative prompt are ignored, and it has a fixed size and no
    guidance, so a `guidance`, `height`, `width` or `frames` given raises ValueError.
    """
    if isinstance(pipe, TinyFlowGenerator):
        return tiny_generator_for(pipe, guidance=guidance, height=height, width=width, frames=frames)
    name = type(pipe).__name__
    adapters = {
        "StableDiffusionPipeline": (DiffusersEpsGenerator, 7.5),
        "StableDiffusionXLPipeline": (DiffusersEpsGenerator, 5.0),
        "StableDiffusion3Pipeline": (SD3Generator, 7.0),
        "FluxPipeline": (FluxGenerator, 3.5),
        "WanPipeline": (WanGenerator, 5.0),
    }
    if name not in adapters:
        raise ValueError(f"pipeline: {name} is not supported; supported: {', '.join(adapters)}")
    cls, default = adapters[name]
    kwargs = {"frames": frames} if cls is WanGenerator else {}
    return cls(pipe, prompt, negative_prompt, default if guidance is None else guidance, height, width, **kwargs)


def tiny_generator_for(gen: TinyFlowGenerator, **options: int | float | None) -> TinyFlowGenerator:
    """`gen` itself, after refusing the pipeline options it has no use for (guidance, height, width, frames)."""
    given = {k: v for k, v in options.items() if v is not None}
    if given:
        _, h, w = gen.noise_shape
        raise ValueError(
            f"the tiny generator has a fixed size ({h}x{w} pixels) and no guidance or frames; leave "
            f"{', '.join(given)} unset (got {', '.join(f'{k}={v}' for k, v in given.items())})"
        )
    return gen


def decode_vae_images(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> images [B, H, W, 3] in [0, 1] through an image VAE (undoing its scaling and shift factors)."""
    z = latents / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
    images = vae.decode(z.to(vae.dtype)).sample.float()
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


def image_size(pipe: Any, height: int | None, width: int | None, multiple: int) -> tuple[int, int]:
    """(height, width) in pixels, the pipeline's default size when not given, checked against `multiple`."""
    size = pipe.default_sample_size * pipe.vae_scale_factor
    h, w = height or size, width or size
    if h % multiple or w % multiple:
        raise ValueError(f"height/width must be multiples of {multiple}, got {h}x{w}")
    return h, w


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")


class DiffusersEpsGenerator:
    """Stable Diffusion 1.x/2.x and SDXL (UNet2DConditionModel, epsilon prediction) as a generator."""

    parameterization = "eps"

    def __init__(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str = "",
        guidance: float = 7.5,
        height: int | None = None,
        width: int | None = None,
    ):
        name = type(pipe).__name__
        if name not in EPS_PIPELINES:
            raise ValueError(f"pipeline: {name} is not a UNet pipeline; use generator_for() to pick the adapter")
        if getattr(pipe.scheduler.config, "prediction_type", "epsilon") != "epsilon":
            raise ValueError(
                f"prediction_type {pipe.scheduler.config.prediction_type!r} is not supported (epsilon only)"
            )
        self.pipe, self.unet, self.vae, self.guidance = pipe, pipe.unet, pipe.vae, guidance
        self.device, self.dtype = pipe.unet.device, pipe.unet.dtype
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = pipe.unet.config.sample_size * scale
        h, w = height or size, width or size
        if h % scale or w % scale:
            raise ValueError(f"height/width must be multiples of {scale}, got {h}x{w}")
        self.noise_shape = (pipe.unet.config.in_channels, h // scale, w // scale)
        cfg = guidance > 1.0
        with torch.no_grad():
            if name == "StableDiffusionXLPipeline":
                cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
                    prompt, device=self.device, do_classifier_free_guidance=cfg, negative_prompt=negative_prompt or None
                )
                time_ids = pipe._get_add_time_ids((h, w), (0, 0), (h, w), cond.dtype, int(pooled.shape[-1])).to(
                    self.device
                )
                self.added = [
                    {"text_embeds": p, "time_ids": time_ids} for p in ([uncond_pooled, pooled] if cfg else [pooled])
                ]
            else:
                cond, uncond = pipe.encode_prompt(prompt, self.device, 1, cfg, negative_prompt or None)
                self.added = [None, None] if cfg else [None]
        self.contexts = [uncond, cond] if cfg else [cond]
        alphas = pipe.scheduler.alphas_cumprod.to(torch.float32)
        self.train_sigmas = ((1 - alphas) / alphas).sqrt()  # sigma at every training timestep

    def sigmas(self, steps: int) -> torch.Tensor:
        """The pipeline scheduler's sigmas for `steps` (its timestep spacing), ending at 0."""
        _check_steps(steps)
        self.pipe.scheduler.set_timesteps(steps, device="cpu")
        return self.pipe.scheduler.sigmas.to(torch.float32).to(self.device)

    def start(self, noise: torch.Tensor, sigma_max: torch.Tensor) -> torch.Tensor:
        """Initial latent as diffusers' Euler scheduler scales it (its `init_noise_sigma`)."""
        spacing = getattr(self.pipe.scheduler.config, "timestep_spacing", "linspace")
        return noise * (sigma_max if spacing in ("linspace", "trailing") else (sigma_max**2 + 1).sqrt())

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) training timestep of a sigma: the inverse of the linear sigma interpolation."""
        value = sigma.float().cpu()
        low = (
            int(
                torch.searchsorted(self.train_sigmas, value.reshape(1), right=True).clamp(1, len(self.train_sigmas) - 1)
            )
            - 1
        )
        lo, hi = self.train_sigmas[low], self.train_sigmas[low + 1]
        frac = ((value - lo) / (hi - lo)).clamp(0, 1)
        return (low + frac).to(self.device)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        n = x.shape[0]
        added = self.added[i]
        if added is not None:
            added = {k: v.expand(n, *v.shape[1:]) for k, v in added.items()}
        ctx = self.contexts[i].expand(n, -1, -1)
        return self.unet(x.to(self.dtype), t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample.float()

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        t = self.timestep(sigma)
        inp = x / (sigma**2 + 1).sqrt()
        eps = [self._eps(inp, t, i) for i in range(len(self.contexts))]
        eps = eps[0] + self.guidance * (eps[1] - eps[0]) if len(eps) == 2 else eps[0]
        return x - sigma * eps

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_vae_images(self.vae, latents)


class FlowGenerator:
    """Shared parts of the flow-matching transformer adapters: schedule, x0 from velocity, guidance."""

    parameterization = "flow"

    def __init__(self, pipe: Any, guidance: float):
        self.pipe, self.transformer, self.vae, self.guidance = pipe, pipe.transformer, pipe.vae, guidance
        self.device, self.dtype = pipe.transformer.device, pipe.transformer.dtype
        self.scheduler = euler_flow_scheduler(pipe.scheduler)

    def schedule_kwargs(self, steps: int) -> dict[str, Any]:
        """Extra `set_timesteps` arguments the pipeline passes (Flux: its sigmas and shift mu)."""
        return {}

    def sigmas(self, steps: int) -> torch.Tensor:
        """The flow scheduler's sigmas (shifted as the pipeline shifts them), ending at 0."""
        _check_steps(steps)
        self.scheduler.set_timesteps(steps, device="cpu", **self.schedule_kwargs(steps))
        return self.scheduler.sigmas.to(torch.float32).to(self.device)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, branch: int) -> torch.Tensor:
        """The transformer's velocity for branch 0 (negative/unconditional) or 1 (conditional)."""
        raise NotImplementedError

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        t = (sigma * self.scheduler.config.num_train_timesteps).expand(x.shape[0])
        if self.uses_cfg:
            v_u, v_c = self.velocity(x, t, 0), self.velocity(x, t, 1)
            v = v_u + self.guidance * (v_c - v_u)
        else:
            v = self.velocity(x, t, 1)
        return x - sigma * v.float()

    @property
    def uses_cfg(self) -> bool:
        return self.guidance > 1.0

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_vae_images(self.vae, latents)


def euler_flow_scheduler(scheduler: Any) -> Any:
    """The pipeline's scheduler when it is a FlowMatchEulerDiscreteScheduler, else one with the same shift.

    Wan ships UniPC; the search and the trainers step with Euler, so the Euler scheduler with Wan's
    `flow_shift` gives the schedule (results then match WanPipeline run with that Euler scheduler).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return scheduler
    config = scheduler.config
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=config.get("num_train_timesteps", 1000),
        shift=config.get("flow_shift", config.get("shift", 1.0)) or 1.0,
    )


class SD3Generator(FlowGenerator):
    """Stable Diffusion 3 / 3.5 (SD3Transformer2DModel) as a generator."""

    def __init__(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str = "",
        guidance: float = 7.0,
        height: int | None = None,
        width: int | None = None,
    ):
        super().__init__(pipe, guidance)
        scale = pipe.vae_scale_factor
        h, w = image_size(pipe, height, width, scale * self.transformer.config.patch_size)
        self.noise_shape = (self.transformer.config.in_channels, h // scale, w // scale)
        with torch.no_grad():
            cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
                prompt,
                None,
                None,
                device=self.device,
                do_classifier_free_guidance=self.uses_cfg,
                negative_prompt=negative_prompt,
            )
        self.embeds = [(uncond, uncond_pooled), (cond, pooled)]

    def schedule_kwargs(self, steps: int) -> dict[str, Any]:
        if not self.scheduler.config.get("use_dynamic_shifting", False):
            return {}
        seq = (self.noise_shape[1] // self.transformer.config.patch_size) * (
            self.noise_shape[2] // self.transformer.config.patch_size
        )
        return {"mu": shift_mu(self.scheduler.config, seq, default_max=1.16)}

    def velocity(self, x: torch.Tensor, t: torch.Tensor, branch: int) -> torch.Tensor:
        emb, pooled = self.embeds[branch]
        n = x.shape[0]
        return self.transformer(
            hidden_states=x.to(self.dtype),
            timestep=t.to(self.dtype),
            encoder_hidden_states=emb.expand(n, -1, -1),
            pooled_projections=pooled.expand(n, -1),
            return_dict=False,
        )[0]


def shift_mu(config: Any, image_seq_len: int, default_max: float) -> float:
    """The resolution-dependent time shift mu (linear in the number of image tokens), as SD3.5 / Flux compute it."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", default_max)
    m = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * m + base_shift - m * base_len


class FluxGenerator(FlowGenerator):
    """Flux.1 (FluxTransformer2DModel, guidance-distilled) as a generator; `guidance` is its guidance embedding."""

    def __init__(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str = "",
        guidance: float = 3.5,
        height: int | None = None,
        width: int | None = None,
    ):
        super().__init__(pipe, guidance)
        scale = pipe.vae_scale_factor
        h, w = image_size(pipe, height, width, scale * 2)
        channels = self.transformer.config.in_channels // 4
        self.noise_shape = (channels, 2 * (h // (scale * 2)), 2 * (w // (scale * 2)))
        with torch.no_grad():
            self.prompt_embeds, self.pooled, self.text_ids = pipe.encode_prompt(prompt, None, device=self.device)
        gh, gw = self.noise_shape[1] // 2, self.noise_shape[2] // 2
        self.img_ids = pipe._prepare_latent_image_ids(1, gh, gw, self.device, self.prompt_embeds.dtype)

    @property
    def uses_cfg(self) -> bool:
        return False  # Flux.1-dev / schnell are guidance-distilled: guidance goes in as an embedding

    def schedule_kwargs(self, steps: int) -> dict[str, Any]:
        import numpy as np

        seq = (self.noise_shape[1] // 2) * (self.noise_shape[2] // 2)
        return {
            "sigmas": np.linspace(1.0, 1 / steps, steps),
            "mu": shift_mu(self.scheduler.config, seq, default_max=1.15),
        }

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> Flux's token sequence [B, h/2 * w/2, 4C] (2x2 patches)."""
        b, c, h, w = x.shape
        return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        """The inverse of `pack`."""
        c, h, w = self.noise_shape
        b = tokens.shape[0]
        return tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, branch: int) -> torch.Tensor:
        n = x.shape[0]
        guidance = (
            torch.full((n,), self.guidance, device=x.device, dtype=torch.float32)
            if self.transformer.config.guidance_embeds
            else None
        )
        out = self.transformer(
            hidden_states=self.pack(x).to(self.dtype),
            timestep=(t / 1000).to(self.dtype),
            guidance=guidance,
            pooled_projections=self.pooled.expand(n, -1),
            encoder_hidden_states=self.prompt_embeds.expand(n, -1, -1),
            txt_ids=self.text_ids,
            img_ids=self.img_ids,
            return_dict=False,
        )[0]
        return self.unpack(out)


class WanGenerator(FlowGenerator):
    """Wan 2.x text-to-video (WanTransformer3DModel) as a generator; latents [C, T, h, w], decode -> [B, T, H, W, 3]."""

    def __init__(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str = "",
        guidance: float = 5.0,
        height: int | None = None,
        width: int | None = None,
        frames: int | None = None,
    ):
        super().__init__(pipe, guidance)
        if getattr(pipe, "transformer_2", None) is not None:
            raise ValueError(
                "pipeline: Wan 2.2 two-expert (transformer_2) pipelines are not supported yet; use a "
                "single-transformer Wan pipeline"
            )
        spatial, temporal = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        h, w, frames = height or 480, width or 832, frames or 81
        patch = self.transformer.config.patch_size
        if h % (spatial * patch[1]) or w % (spatial * patch[2]):
            raise ValueError(f"height/width must be multiples of {spatial * patch[1]}, got {h}x{w}")
        if frames < 1 or (frames - 1) % temporal:
            raise ValueError(f"frames must be 1 more than a multiple of {temporal} (e.g. 81), got {frames}")
        self.noise_shape = (
            self.transformer.config.in_channels,
            (frames - 1) // temporal + 1,
            h // spatial,
            w // spatial,
        )
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(
                prompt, negative_prompt, self.uses_cfg, device=self.device, max_sequence_length=512
            )  # WanPipeline.__call__'s default
        self.embeds = [uncond, cond]

    def velocity(self, x: torch.Tensor, t: torch.Tensor, branch: int) -> torch.Tensor:
        n = x.shape[0]
        return self.transformer(
            hidden_states=x.to(self.dtype),
            timestep=t,
            encoder_hidden_states=self.embeds[branch].expand(n, -1, -1),
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
        video = self.vae.decode((latents * std + mean).to(self.vae.dtype)).sample.float()  # [B, 3, T, H, W]
        return ((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)


def load_pipeline(path: str, device: str = "cpu", dtype: str = "fp32", quiet: bool = False) -> Any:
    """A diffusers pipeline from a directory or hub id (safetensors only), or the TinyFlowGenerator of a tiny
    generator directory (`rewarddance tiny-generator`; always fp32, `dtype` does not apply). `quiet` hides
    diffusers' loading bar. A path that is neither, or a hub id that cannot be fetched, is a ValueError."""
    problem = source_problem(str(path), "pipeline")
    if problem:
        raise ValueError(problem)
    if is_tiny_generator(path) or looks_like_model_dir(path):
        return load_tiny_generator(path, device)  # a non-tiny model directory gets its clear error here
    if Path(path).is_dir() and not (Path(path) / "model_index.json").is_file():
        raise ValueError(f"{str(path)!r} has no model_index.json; pass the diffusers pipeline's own directory")
    try:
        import diffusers
    except ImportError as exc:
        raise ValueError("diffusers is needed for --pipeline: `pip install diffusers`") from exc
    if quiet:
        diffusers.utils.logging.disable_progress_bar()
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    try:
        with warnings_silenced(diffusers):  # its imports warn about torchvision-backed processors we never use
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                path, use_safetensors=True, **{dtype_keyword(diffusers): torch_dtype}
            )
    except OSError as exc:
        raise ValueError(
            f"cannot load the pipeline {str(path)!r}: not a local directory, and not fetched from the Hugging Face "
            f"hub (offline, a wrong id, or a gated model). Download it where there is internet, e.g. "
            f"`{download_command(str(path))}`, and pass that directory"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def dtype_keyword(diffusers: Any) -> str:
    """`dtype`, or `torch_dtype` for diffusers releases from before it was renamed."""
    from importlib import import_module

    renamed = hasattr(import_module("diffusers.utils.deprecation_utils"), "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return "dtype" if renamed else "torch_dtype"


@contextmanager
def warnings_silenced(diffusers: Any) -> Iterator[None]:
    """Silence transformers' and diffusers' warnings (not their errors) inside the block: a failure is reported
    by the caller in one message."""
    from transformers.utils import logging

    loggers = (logging, diffusers.utils.logging)
    before = [lib.get_verbosity() for lib in loggers]
    for lib in loggers:
        lib.set_verbosity_error()
    try:
        yield
    finally:
        for lib, level in zip(loggers, before):
            lib.set_verbosity(level)


def looks_like_model_dir(path: str) -> bool:
    """A local directory with a config.json but no model_index.json: not a diffusers pipeline."""
    folder = Path(path)
    return folder.is_dir() and (folder / "config.json").is_file() and not (folder / "model_index.json").is_file()
