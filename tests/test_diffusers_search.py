"""The diffusers adapter on a tiny random-weight Stable Diffusion pipeline saved to disk and loaded back."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from rewarddance.backend.generators.diffusers_adapter import DiffusersEpsGenerator, load_pipeline  # noqa: E402
from rewarddance.backend.generators.sampling import sample  # noqa: E402
from rewarddance.backend.search.algorithms import best_of_n, seeded_noise, zero_order  # noqa: E402
from rewarddance.backend.search.rewards import ColourReward  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A tiny StableDiffusionPipeline (UNet, VAE, CLIP text encoder, offline tokenizer) written as a hub-style dir."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from rewarddance.backend.vlm.tiny import QWEN_SPECIAL, build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(QWEN_SPECIAL)
    tokenizer.model_max_length = 16
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokenizer.pad_token = "<|endoftext|>"
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                        num_hidden_layers=2, max_position_embeddings=16, pad_token_id=pad,
                                        bos_token_id=pad, eos_token_id=pad))
    unet = diffusers.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                          block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32,
                                          attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                                  norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16)
    scheduler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 timestep_spacing="linspace")
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = tmp_path_factory.mktemp("tiny_sd")
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def test_adapter_sampling_equals_the_diffusers_pipeline(tiny_sd):
    """Same noise, same steps, same guidance: our Euler over the adapter == StableDiffusionPipeline's latents."""
    pipe = load_pipeline(str(tiny_sd))
    gen = DiffusersEpsGenerator(pipe, "a red fox", guidance=3.0)
    noise = seeded_noise(gen, 1, 4)
    ours = sample(gen, noise, 6)
    theirs = pipe("a red fox", num_inference_steps=6, guidance_scale=3.0, latents=noise.clone(), output_type="latent").images
    assert ours.shape == theirs.shape == (1, 4, 8, 8)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    sig = gen.sigmas(6)
    assert sig[-1] == 0 and torch.all(sig[:-1] > sig[1:])
    assert gen.decode(ours).shape == (1, 16, 16, 3)


def test_search_over_a_diffusers_pipeline(tiny_sd):
    gen = DiffusersEpsGenerator(load_pipeline(str(tiny_sd)), "a red fox", guidance=3.0)
    reward = ColourReward(0)
    first = float(reward(gen.decode(sample(gen, seeded_noise(gen, 1, 0), 4)))[0])
    assert best_of_n(gen, reward, 4, 4, seed=0).score == pytest.approx(first, abs=1e-6)  # N = 1 is plain sampling
    assert best_of_n(gen, reward, 4, 32, seed=0).score >= first
    assert zero_order(gen, reward, 4, 32, seed=0).score >= first


def test_search_command_line(tiny_sd, tiny_dirs, tmp_path, capsys):
    import json

    from rewarddance.backend.cli import main

    out = tmp_path / "best.png"
    assert main(["search", "--pipeline", str(tiny_sd), "--prompt", "a red fox", "--algorithm", "best_of_n", "--budget", "12",
                 "--steps", "4", "--reward-model", str(tiny_dirs["qwen2_5_vl"]), "--dtype", "fp32", "--device", "cpu",
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["denoiser_calls"] == 12 and len(report["history"]) == 3 and out.is_file()
    assert report["score"] == max(c["score"] for c in report["history"])
    assert main(["search", "--pipeline", str(tiny_sd), "--prompt", "x", "--algorithm", "magic", "--budget", "4",
                 "--reward-model", str(tiny_dirs["qwen2_5_vl"]), "--out", str(out)]) == 2
