"""The diffusers adapter on a tiny random-weight Stable Diffusion pipeline saved to disk and loaded back."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from rewarddance.backend.generators.diffusers_adapter import DiffusersEpsGenerator, generator_for, load_pipeline  # noqa: E402
from rewarddance.backend.generators.protocol import seeded_noise  # noqa: E402
from rewarddance.backend.generators.sampling import sample  # noqa: E402
from rewarddance.backend.rewards import ColourReward  # noqa: E402
from rewarddance.backend.search.algorithms import best_of_n, zero_order  # noqa: E402


def tiny_tokenizer(max_length: int = 16):
    """An offline byte-level BPE tokenizer (stands in for CLIP's and T5's; the pipelines only call it)."""
    from rewarddance.backend.vlm.qwen2_vl import QWEN_SPECIAL
    from rewarddance.backend.vlm.tiny import build_tokenizer

    tokenizer = build_tokenizer(QWEN_SPECIAL)
    tokenizer.model_max_length = max_length
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def tiny_clip(tokenizer, hidden: int = 32, projection: int | None = None):
    """A 2-layer CLIP text encoder (with a projection head when `projection` is given)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=pad,
        bos_token_id=pad,
        eos_token_id=pad,
        projection_dim=projection or hidden,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def tiny_t5(tokenizer, d_model: int = 32, umt5: bool = False):
    """A 1-layer T5 (or UMT5, for Wan) encoder."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kw = dict(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return UMT5EncoderModel(UMT5Config(**kw)) if umt5 else T5EncoderModel(T5Config(**kw))


def tiny_vae(latent_channels: int = 4, shift: float | None = None):
    """A 2-level AutoencoderKL (downsamples by 2)."""
    kw = {"shift_factor": shift, "scaling_factor": 1.5} if shift is not None else {}
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=16,
        **kw,
    )


def save(pipe, tmp_path_factory, name):
    out = tmp_path_factory.mktemp(name)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A tiny StableDiffusionPipeline (UNet, VAE, CLIP text encoder, offline tokenizer) written as a hub-style dir."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text = tiny_clip(tokenizer)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="linspace"
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return save(pipe, tmp_path_factory, "tiny_sd")


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    """A tiny StableDiffusionXLPipeline: two CLIP encoders, text/time added conditioning, "leading" Euler spacing."""
    torch.manual_seed(1)
    tok = tiny_tokenizer()
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=8,
        cross_attention_dim=64,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_clip(tok),
        text_encoder_2=tiny_clip(tok, 32, 32),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=scheduler,
    )
    return save(pipe, tmp_path_factory, "tiny_sdxl")


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    """A tiny StableDiffusion3Pipeline (MMDiT, two CLIP encoders and T5)."""
    torch.manual_seed(2)
    tok = tiny_tokenizer()
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        out_channels=4,
    )
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(shift=0.1),
        text_encoder=tiny_clip(tok, 16, 16),
        tokenizer=tok,
        text_encoder_2=tiny_clip(tok, 16, 16),
        tokenizer_2=tok,
        text_encoder_3=tiny_t5(tok),
        tokenizer_3=tok,
    )
    return save(pipe, tmp_path_factory, "tiny_sd3")


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    """A tiny FluxPipeline (double and single stream blocks, guidance embedding, CLIP + T5, dynamic shift)."""
    torch.manual_seed(3)
    tok = tiny_tokenizer()
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    pipe = diffusers.FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=tiny_vae(shift=0.1),
        text_encoder=tiny_clip(tok, 16),
        tokenizer=tok,
        text_encoder_2=tiny_t5(tok),
        tokenizer_2=tok,
    )
    return save(pipe, tmp_path_factory, "tiny_flux")


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    """A tiny WanPipeline (3-D transformer, causal video VAE, UMT5) with a flow Euler scheduler."""
    torch.manual_seed(4)
    tok = tiny_tokenizer(32)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    vae = diffusers.AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    pipe = diffusers.WanPipeline(
        tokenizer=tok,
        text_encoder=tiny_t5(tok, umt5=True),
        vae=vae,
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    return save(pipe, tmp_path_factory, "tiny_wan")


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_image_adapters_sample_like_their_pipelines(family, request):
    """SDXL, SD3 and Flux: Euler over the adapter == the pipeline's own latents for the same noise."""
    pipe = load_pipeline(str(request.getfixturevalue(f"tiny_{family}")))
    size = {"sdxl": 16, "sd3": 16, "flux": 16}[family]
    guidance = {"sdxl": 4.0, "sd3": 3.0, "flux": 3.5}[family]
    gen = generator_for(pipe, "a red fox", negative_prompt="", guidance=guidance, height=size, width=size)
    noise = seeded_noise(gen, 1, 5)
    ours = sample(gen, noise, 5)
    latents = gen.pack(noise) if family == "flux" else noise.clone()
    theirs = pipe(
        "a red fox",
        num_inference_steps=5,
        guidance_scale=guidance,
        latents=latents,
        height=size,
        width=size,
        output_type="latent",
    ).images
    theirs = gen.unpack(theirs) if family == "flux" else theirs
    assert ours.shape == theirs.shape == (1, *gen.noise_shape)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    assert gen.decode(ours).shape == (1, size, size, 3)


def test_wan_adapter_samples_video_like_the_pipeline_and_searches(tiny_wan):
    """Wan: 5-D latents [1, C, T, h, w], decode to frames [1, T, H, W, 3]; search with a video reward."""
    pipe = load_pipeline(str(tiny_wan))
    gen = generator_for(pipe, "a red fox running", guidance=4.0, height=16, width=16, frames=5)
    assert gen.noise_shape == (16, 2, 2, 2)
    noise = seeded_noise(gen, 1, 6)
    ours = sample(gen, noise, 4)
    theirs = pipe(
        "a red fox running",
        num_inference_steps=4,
        guidance_scale=4.0,
        latents=noise.clone(),
        height=16,
        width=16,
        num_frames=5,
        output_type="latent",
    ).frames
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    video = gen.decode(ours)
    assert video.shape == (1, 5, 16, 16, 3) and 0 <= float(video.min()) and float(video.max()) <= 1
    reward = ColourReward(0)
    first = float(reward(video)[0])
    result = best_of_n(gen, reward, 4, 12, seed=6, batch=3)
    assert result.score == pytest.approx(max(c.score for c in result.history)) and result.score >= first - 1e-6
    assert result.image.shape == (1, 5, 16, 16, 3)


def test_unsupported_pipelines_and_bad_sizes_are_refused(tiny_sd, tiny_flux, tiny_wan):
    class KandinskyPipeline:  # noqa: D401 - a stand-in for any other pipeline class
        pass

    with pytest.raises(ValueError, match="KandinskyPipeline is not supported; supported: StableDiffusionPipeline"):
        generator_for(KandinskyPipeline(), "x")
    with pytest.raises(ValueError, match="height/width must be multiples of 4"):
        generator_for(load_pipeline(str(tiny_flux)), "x", height=18, width=16)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        generator_for(load_pipeline(str(tiny_sd)), "x").sigmas(0)
    with pytest.raises(ValueError, match=r"frames must be 1 more than a multiple of 4 \(e.g. 81\), got 6"):
        generator_for(load_pipeline(str(tiny_wan)), "x", height=16, width=16, frames=6)


def test_adapter_sampling_equals_the_diffusers_pipeline(tiny_sd):
    """Same noise, same steps, same guidance: our Euler over the adapter == StableDiffusionPipeline's latents."""
    pipe = load_pipeline(str(tiny_sd))
    gen = DiffusersEpsGenerator(pipe, "a red fox", guidance=3.0)
    noise = seeded_noise(gen, 1, 4)
    ours = sample(gen, noise, 6)
    theirs = pipe(
        "a red fox", num_inference_steps=6, guidance_scale=3.0, latents=noise.clone(), output_type="latent"
    ).images
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
    assert (
        main(
            [
                "search",
                "--pipeline",
                str(tiny_sd),
                "--prompt",
                "a red fox",
                "--algorithm",
                "best_of_n",
                "--budget",
                "12",
                "--steps",
                "4",
                "--reward-model",
                str(tiny_dirs["qwen2_5_vl"]),
                "--dtype",
                "fp32",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["denoiser_calls"] == 12 and len(report["history"]) == 3 and out.is_file()
    assert report["score"] == max(c["score"] for c in report["history"])
    assert (
        main(
            [
                "search",
                "--pipeline",
                str(tiny_sd),
                "--prompt",
                "x",
                "--algorithm",
                "magic",
                "--budget",
                "4",
                "--reward-model",
                str(tiny_dirs["qwen2_5_vl"]),
                "--out",
                str(out),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("algorithm,family", [("raft", "sd"), ("grpo", "sd3"), ("refl", "flux"), ("nft", "sd")])
def test_rl_training_on_diffusers_pipelines_exports_comfyui_keys(algorithm, family, request, tmp_path):
    """A LoRA trained on a diffusers pipeline (UNet or transformer) runs, exports the family's ComfyUI keys and
    a PEFT directory that reloads into a fresh network to the same outputs (nft: clean samples by DPM-Solver++(2M)
    over the adapter)."""
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from rewarddance.backend.rl.config import RLConfig
    from rewarddance.backend.rl.export import load_peft_adapter
    from rewarddance.backend.rl.run import train_rl

    path = request.getfixturevalue(f"tiny_{family}")
    cfg = RLConfig(
        algorithm=algorithm,
        out=str(tmp_path / "run"),
        prompts=["a red fox"],
        steps=2,
        learning_rate=1e-3,
        lora_rank=2,
        lora_alpha=4,
        prompts_per_step=1,
        eval_seeds=1,
        save_every=1,
        generator={"kind": "diffusers", "path": str(path), "height": 16, "width": 16, "device": "cpu"},
        trainer={"group_size": 2, "sample_steps": 3, "raft_updates": 1, "minibatches": 1}
        | ({"nft_sampler": "dpmpp_2m", "nft_timesteps": 1} if algorithm == "nft" else {}),
    )
    summary = train_rl(cfg)
    assert summary["step"] == 2 and summary["skipped_updates"] == 0
    keys = list(load_file(summary["files"]["comfyui"]))
    prefix = {"sd": "lora_unet_", "sd3": "transformer.", "flux": "transformer."}[family]
    assert keys and all(k.startswith(prefix) for k in keys) and any(k.endswith(".alpha") for k in keys)
    trained = load_pipeline(str(path))
    network = getattr(trained, "transformer", None) or trained.unet
    load_peft_adapter(network, summary["files"]["peft"])
    state = load_file(str(tmp_path / "run" / "checkpoint" / "trainable.safetensors"))
    reloaded = {n: p.detach().cpu() for n, p in network.named_parameters() if "lora_" in n}
    assert set(reloaded) == set(state)
    assert all(torch.equal(reloaded[k], state[k]) for k in state)
