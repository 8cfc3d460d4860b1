"""The generator protocol over a diffusers UNet pipeline with epsilon prediction (Stable Diffusion 1.x/2.x).

The prompt is encoded once; `denoise` is the k-diffusion "eps" wrapper: c_in = 1 / sqrt(sigma^2 + 1),
x0 = x - sigma * eps, with classifier-free guidance. Sigmas and timesteps follow diffusers'
`EulerDiscreteScheduler` defaults ("linspace" spacing, linear interpolation of the training sigmas), so
sampling through this adapter reproduces `StableDiffusionPipeline` with that scheduler (tested). SDXL (extra time/text conditioning), SD3 / Flux (flow transformers) and Wan are not
wired yet: they raise a clear error.
"""

from __future__ import annotations

from typing import Any

import torch


class DiffusersEpsGenerator:
    """Stable Diffusion 1.x/2.x (UNet2DConditionModel, epsilon prediction) as a generator."""

    parameterization = "eps"

    def __init__(self, pipe: Any, prompt: str, negative_prompt: str = "", guidance: float = 7.5,
                 height: int | None = None, width: int | None = None):
        unet = getattr(pipe, "unet", None)
        if unet is None or type(pipe).__name__ not in ("StableDiffusionPipeline",):
            raise ValueError(f"{type(pipe).__name__}: only StableDiffusionPipeline (SD 1.x/2.x) is supported by the "
                             "diffusers adapter so far; SDXL, SD3, Flux and Wan are planned")
        if getattr(pipe.scheduler.config, "prediction_type", "epsilon") != "epsilon":
            raise ValueError(f"prediction_type {pipe.scheduler.config.prediction_type!r} is not supported yet (epsilon only)")
        self.pipe, self.unet, self.vae, self.guidance = pipe, unet, pipe.vae, guidance
        self.device = unet.device
        self.dtype = unet.dtype
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = unet.config.sample_size * scale
        h, w = height or size, width or size
        self.noise_shape = (unet.config.in_channels, h // scale, w // scale)
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(prompt, self.device, 1, guidance > 1.0, negative_prompt or None)
        self.context = torch.cat([uncond, cond]) if guidance > 1.0 else cond
        alphas = pipe.scheduler.alphas_cumprod.to(torch.float32)
        self.train_sigmas = ((1 - alphas) / alphas).sqrt()  # sigma at every training timestep

    def sigmas(self, steps: int) -> torch.Tensor:
        """Sigmas at `steps` evenly spaced training timesteps (diffusers' "linspace" spacing), then 0."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        t = torch.linspace(len(self.train_sigmas) - 1, 0, steps, dtype=torch.float64)
        low = t.floor().long().clamp(max=len(self.train_sigmas) - 2)
        frac = (t - low).float()
        sig = torch.lerp(self.train_sigmas[low], self.train_sigmas[low + 1], frac)
        return torch.cat([sig, torch.zeros(1)]).to(self.device)

    def start(self, noise: torch.Tensor, sigma_max: torch.Tensor) -> torch.Tensor:
        """Initial latent as diffusers' Euler scheduler scales it (its `init_noise_sigma`)."""
        spacing = getattr(self.pipe.scheduler.config, "timestep_spacing", "linspace")
        return noise * (sigma_max if spacing in ("linspace", "trailing") else (sigma_max ** 2 + 1).sqrt())

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) training timestep of a sigma: the inverse of the linear sigma interpolation."""
        value = sigma.float().cpu()
        low = int(torch.searchsorted(self.train_sigmas, value.reshape(1), right=True).clamp(1, len(self.train_sigmas) - 1)) - 1
        lo, hi = self.train_sigmas[low], self.train_sigmas[low + 1]
        frac = ((value - lo) / (hi - lo)).clamp(0, 1)
        return (low + frac).to(self.device)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        t = self.timestep(sigma)
        n = x.shape[0]
        if self.guidance > 1.0:
            inp = torch.cat([x, x]) * c_in
            ctx = torch.cat([self.context[:1].expand(n, -1, -1), self.context[1:].expand(n, -1, -1)])
            eps_u, eps_c = self.unet(inp.to(self.dtype), t, encoder_hidden_states=ctx).sample.float().chunk(2)
            eps = eps_u + self.guidance * (eps_c - eps_u)
        else:
            eps = self.unet((x * c_in).to(self.dtype), t, encoder_hidden_states=self.context.expand(n, -1, -1)).sample.float()
        return x - sigma * eps

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample.float()
        return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


def load_pipeline(path: str, device: str = "cpu", dtype: str = "fp32") -> Any:
    """A diffusers pipeline from a directory or hub id (safetensors only)."""
    try:
        import diffusers
    except ImportError as exc:
        raise ValueError("diffusers is needed for --pipeline: `pip install diffusers`") from exc
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    pipe = diffusers.DiffusionPipeline.from_pretrained(path, torch_dtype=torch_dtype, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
