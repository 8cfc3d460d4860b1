"""The pack's nodes in-process inside ComfyUI's own Python (tiny SD1.5-shaped models, TAESD, tiny judges): the
noise search node, node input checks, LoRA export through ComfyUI's loaders, and the Reward LoRA Trainer.
Each test runs one of tests/comfy_inprocess_*.py with COMFYUI_PYTHON and reads the JSON line it prints."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH (and COMFYUI_PYTHON) to run against ComfyUI")
REPO = Path(__file__).resolve().parents[1]


@functools.cache
def comfy_has(module: str) -> bool:
    """Whether ComfyUI's interpreter (COMFYUI_PYTHON) can import `module` (not this test runner's)."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=120).returncode == 0


def needs_in_comfy(module: str) -> None:
    """Skip when ComfyUI's environment lacks `module` (the node then says what to install; tested elsewhere)."""
    if not comfy_has(module):
        pytest.skip(f"ComfyUI's environment has no {module}: pip install -r requirements.txt there")


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """tests/<script> in ComfyUI's Python with `args`."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    command = [python, str(REPO / "tests" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ})


def last_json(out: subprocess.CompletedProcess) -> dict:
    """The last JSON line a script printed (after checking it succeeded)."""
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    return json.loads(lines[-1])


@pytest.mark.parametrize(
    "algorithm", ["best_of_n", "random_search", "zero_order", "search_over_paths", "noise_gradient", "tree"]
)
def test_noise_search_node_on_a_tiny_sd15_model(algorithm, tiny_dirs):
    """The node in-process (models made in inference mode) on a tiny SD1.5-shaped model + TAESD; its NOISE
    replays the latent through euler (not search_over_paths / tree: their LATENT decoded rescores to the best)."""
    result = last_json(run_script("comfy_inprocess_search.py", str(REPO), str(tiny_dirs["qwen2_5_vl"]), algorithm))
    assert result["latent_shape"] == [1, 4, 8, 8] and result["image_shape"] == [1, 64, 64, 3]
    assert result["summary"].startswith(algorithm) and "denoiser calls" in result["summary"]
    assert result["image_std"] > 0.01
    branched = algorithm in ("search_over_paths", "tree")  # paths are not a function of the initial noise alone
    if not branched:
        scale = 100.0  # the tiny random UNet's latents reach ~60: compare relative to that scale
        assert result["replay_max_diff"] <= 1e-6 * scale
    assert result["replays"] is (not branched)
    assert result["latent_rescored"] == pytest.approx(result["score"], abs=1e-5)  # the LATENT is the IMAGE scored
    assert result["latent_rescored"] == pytest.approx(result["best_score"], rel=1e-3)  # ... and the reported best


def test_noise_search_node_prunes_early_and_keep_fraction_one_is_plain_best_of_n(tiny_dirs):
    """prune_at / keep_fraction (optional inputs at the end): keep_fraction 1 is plain best_of_n, latent for latent;
    pruned to a quarter it screens more candidates in the same budget, and every NOISE still replays."""
    result = last_json(run_script("comfy_inprocess_search.py", str(REPO), str(tiny_dirs["qwen2_5_vl"]), "pruning"))
    summaries = result["summaries"]
    assert result["keep_all_equal"] and summaries["keep_all"] == summaries["plain"]
    assert summaries["plain"].startswith("best_of_n: best score") and "of 6 candidates" in summaries["plain"]
    # 4 steps, pruned at step 2: n (2 + 1) + keep(n) (4 - 2 - 1) <= 24 -> 7 screened, 1 finished, 22 calls
    assert "of 1 candidates; 22 denoiser calls" in summaries["pruned"] and "7 screened early" in summaries["pruned"]
    assert all(diff <= 1e-4 for diff in result["replay_max_diff"].values())


def test_noise_gradient_ascends_the_judge_through_sampling_and_decoding(tiny_dirs):
    """noise_gradient under inference mode: every round's noise differs from the last, the judge's gradient
    (not only the norm regulariser) moved it, the score rises from the first round, and no copy stays loaded."""
    result = last_json(run_script("comfy_inprocess_search.py", str(REPO), str(tiny_dirs["qwen2_5_vl"]), "gradient"))
    assert result["rounds"] == 4 and result["summary"].startswith("noise_gradient: best score")
    assert all(step > 1e-5 for step in result["round_steps"])  # SGD moves the noise every round
    assert result["judge_moved"] > 1e-4  # vs. the same search with the judge's gradient cut
    assert result["best_score"] >= result["scores"][0] and result["scores"][-1] > result["scores"][0]
    assert result["copies_left_loaded"] == 0  # the trainable model copy is unloaded after the search


def test_noise_search_node_previews_and_cancel_return_the_best_so_far(tiny_dirs):
    judge = str(tiny_dirs["qwen2_5_vl"])
    full = run_script("comfy_inprocess_search.py", str(REPO), judge, "random_search")
    cancelled = run_script("comfy_inprocess_search.py", str(REPO), judge, "random_search", "interrupt")
    results = [last_json(full), last_json(cancelled)]
    assert results[0]["previews"] >= 1  # the best image so far is previewed on the node
    assert "stopped early" in results[1]["summary"] and "stopped early" not in results[0]["summary"]
    calls = [int(r["summary"].split(" denoiser calls")[0].split()[-1]) for r in results]
    assert calls[1] < calls[0] and results[1]["latent_shape"] == [1, 4, 8, 8]


def test_node_inputs_refuse_bad_values_with_the_input_named(tiny_dirs):
    errors = last_json(run_script("comfy_inprocess_search.py", str(REPO), str(tiny_dirs["qwen2_5_vl"]), "bad_inputs"))
    assert errors["search_batch"].startswith("latent_image:") and "batch of 1" in errors["search_batch"]
    assert errors["search_prompt"].startswith("text:")
    assert errors["gradient_remote"].startswith("algorithm: noise_gradient") and "locally" in errors["gradient_remote"]
    assert errors["prune_other"].startswith("prune_at: early pruning works with best_of_n or random_search, not tree")
    assert errors["prune_step"].startswith("prune_at must be a whole step index (1 to 1)")
    assert errors["prune_past_the_end"].startswith("prune_at must be a step index from 1 to 1 (steps 2)")
    assert errors["keep_fraction"].startswith("keep_fraction must lie in (0, 1]")
    assert errors["video_missing"].startswith("frames / video:")
    assert errors["hub_id_empty"].startswith("hub_id:")
    assert errors["score_prompt"].startswith("text:")
    assert errors["criteria_samples"].startswith("samples 3") and "temperature" in errors["criteria_samples"]
    # sampled judgements were added after the older inputs, so saved workflows keep their widget values in place
    assert errors["criteria_inputs"] == [
        *("preset", "preset_2", "preset_3", "custom", "chain_of_thought", "examples", "verdicts", "example_text"),
        *("samples", "temperature", "top_p", "seed"),
    ]
    assert errors["criteria_sampled"] == {
        "cot": "reasoning_first",
        "samples": 2,
        "temperature": 0.9,
        "top_p": 0.8,
        "seed": 3,
        "criteria": ["alignment"],
    }


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_exported_lora_loads_through_lora_loader_model_only_and_matches(strength, tmp_path):
    """Our ComfyUI-format LoRA changes a tiny SD1.5-shaped model's output exactly as the in-memory LoRA did
    (at strength 0.5 as the in-memory LoRA with its delta halved: the alpha key sets the scale)."""
    needs_in_comfy("peft")
    result = last_json(run_script("comfy_inprocess_lora.py", str(REPO), str(tmp_path), str(strength)))
    assert result["patches"] * 3 == result["keys"] and result["patches"] > 0  # every adapted layer was patched
    assert result["lora_changes_output"] > 1e-4
    assert result["max_diff"] <= 1e-3 * result["lora_changes_output"]


def run_training_script(tiny_dirs, out_dir, mode: str) -> dict:
    """tests/comfy_inprocess_training.py in ComfyUI's Python; its JSON line."""
    script = "comfy_inprocess_training.py"
    return last_json(run_script(script, str(REPO), str(tiny_dirs["qwen2_5_vl"]), str(out_dir), mode, timeout=600))


@pytest.mark.parametrize("algorithm", ["raft", "grpo", "refl"])
def test_reward_lora_trainer_node_trains_exports_and_leaves_the_model_alone(algorithm, tiny_dirs, tmp_path):
    """The trainer node under inference mode on a tiny SD1.5-shaped model (flow-matching for grpo) with a real
    tiny CLIP: the LoRA trains, the user's MODEL is unchanged, the saved file loaded by the stock
    LoraLoaderModelOnly and the LORA_MODEL output both reproduce the trained MODEL output."""
    needs_in_comfy("peft")
    result = run_training_script(tiny_dirs, tmp_path, algorithm)
    assert result["summary"].startswith(f"{algorithm}: 4 steps") and "held-out reward" in result["summary"]
    assert result["log_steps"] == [1, 2, 3, 4]
    assert result["files"] == [
        f"test_{algorithm}.safetensors",
        f"test_{algorithm}_run",
        f"test_{algorithm}_step00002.safetensors",
        f"test_{algorithm}_step00004.safetensors",
    ]
    assert result["user_model_changed"] == 0.0
    assert result["lora_up_max"] > 0  # trained: lora_up starts at zero
    assert result["file_vs_trained"] <= 1e-6 and result["lora_model_vs_trained"] <= 1e-6
    if algorithm == "raft":  # the denoising loss moves the weights visibly; the tiny reward's gradients are ~1e-10
        assert result["lora_effect"] > 100 * max(result["file_vs_trained"], 1e-7)
    assert result["chart_shape"][0] == 1 and result["chart_shape"][3] == 3 and result["chart_shape"][1] >= 300
    assert result["previews"] == 4  # one live chart per step on the progress bar
    assert result["trained_requires_grad"] is False


def test_reward_lora_trainer_trains_nft_with_a_comfyui_sampler_and_its_lora_loads(tiny_dirs, tmp_path):
    """nft on the tiny SD1.5-shaped (epsilon) model, its samples made by ComfyUI's dpmpp_2m: 2 steps train the LoRA
    through the ComfyUI denoiser, and the saved file loaded by LoraLoaderModelOnly (and the LORA_MODEL output)
    reproduce the trained MODEL's output; the user's MODEL is unchanged."""
    needs_in_comfy("peft")
    result = run_training_script(tiny_dirs, tmp_path, "nft")
    assert result["summary"].startswith("nft: 2 steps") and "held-out reward" in result["summary"]
    assert result["log_steps"] == [1, 2]
    assert result["sampler_calls"] == 2  # one dpmpp_2m sampling of the group per step (held-out samples use Euler)
    assert result["files"] == ["test_nft.safetensors", "test_nft_run", "test_nft_step00002.safetensors"]
    assert result["user_model_changed"] == 0.0 and result["trained_requires_grad"] is False
    assert result["lora_up_max"] > 0  # trained: lora_up starts at zero
    assert result["file_vs_trained"] <= 1e-6 and result["lora_model_vs_trained"] <= 1e-6
    assert result["lora_effect"] > 100 * max(result["file_vs_trained"], 1e-7)


def test_reward_lora_trainer_cancel_checkpoints_and_queueing_again_resumes(tiny_dirs, tmp_path):
    """Cancel in the middle of step 3: the run stops with a checkpoint at step 2 and its LoRA file; the same node
    queued again resumes and ends at the requested 5 steps, each logged once."""
    needs_in_comfy("peft")
    result = run_training_script(tiny_dirs, tmp_path, "cancel")
    assert result["first_run"] == "interrupted" and result["checkpoint_step"] == 2
    assert result["files_after_cancel"] == ["test_raft_run", "test_raft_step00002.safetensors"]
    assert result["summary"].startswith("raft: 5 steps (resumed)")
    assert result["log_steps"] == [1, 2, 3, 4, 5]


def test_reward_lora_trainer_refuses_bad_inputs_naming_them(tiny_dirs, tmp_path):
    needs_in_comfy("peft")
    errors = run_training_script(tiny_dirs, tmp_path, "bad_inputs")
    expected = {
        "empty_prompts": "prompts:",
        "batch": "latent_image:",
        "grpo_on_eps": "algorithm:",
        "grpo_group": "group_size:",
        "prefix": "filename_prefix:",
        "learning_rate": "learning_rate",
        "nft_group": "group_size: nft",
        "nft_sampler": "sampler_name must be one of ComfyUI's samplers",
    }
    for case, start in expected.items():
        assert errors[case].startswith(start), (case, errors[case])


def test_default_lora_targets_fit_comfyui_flux_sd3_and_wan_networks():
    """On ComfyUI's own Flux, SD3 (MMDiT) and Wan classes (tiny sizes) the default targets find the attention and
    MLP projections, and every exported key names a weight ComfyUI's LoRA key map knows (diffusion_model.<module>)."""
    needs_in_comfy("peft")
    result = last_json(run_script("comfy_inprocess_lora.py", str(REPO), "families"))
    assert {k: v["family"] for k, v in result.items()} == {
        "flux": "comfy_flux",
        "sd3": "comfy_mmdit",
        "wan": "comfy_wan",
    }
    assert result["flux"]["adapted"] == 10 and result["wan"]["adapted"] == 10 and result["sd3"]["adapted"] == 7
    assert all(v["unknown"] == [] for v in result.values())


def run_video_script(tiny_dirs, out_dir, mode: str) -> dict:
    """tests/comfy_inprocess_video.py (the tiny Wan-shaped model and Wan VAE) in ComfyUI's Python; its JSON line."""
    judge = str(tiny_dirs["qwen2_5_vl"])
    return last_json(run_script("comfy_inprocess_video.py", str(REPO), judge, str(out_dir), mode, timeout=600))


def test_score_video_with_a_comfyui_video_equals_its_frames_and_the_judge(tiny_dirs, tmp_path):
    """Score Video given a VIDEO (as Create Video makes it, at 24000/1001 fps) scores exactly as the same frames +
    fps as an IMAGE batch, and both equal the judge's own scores of those videos; also stacked and subsampled.
    Bad frames or videos are refused naming the input."""
    result = run_video_script(tiny_dirs, tmp_path, "score")
    assert len(result["one"]) == 1 and len(result["stacked"]) == 3
    assert result["one"] == pytest.approx(result["one_frames"], abs=1e-5)
    assert result["stacked"] == pytest.approx(result["stacked_frames"], abs=1e-5)
    assert result["stacked"] == pytest.approx(result["reference"], abs=1e-5)
    assert result["one"] == pytest.approx(result["reference"][:1], abs=1e-5)
    assert result["few"] == pytest.approx(result["reference_few"], abs=1e-5)  # max_frames 3 of each 6
    assert result["preview_shape"] == [3, 32, 32, 3]  # each video's first frame
    assert result["summary"].count("video ") == 3
    errors = result["errors"]  # bad inputs name the input to fix
    assert errors["uneven"].startswith("frames_per_video: 7 frames")
    assert errors["uneven_video"].startswith("frames_per_video: 7 frames")
    assert errors["both"].startswith("frames / video:") and "not both" in errors["both"]
    assert errors["no_frames"].startswith("video:") and errors["no_image_frames"].startswith("frames:")


@pytest.mark.parametrize("algorithm", ["best_of_n", "noise_gradient"])
def test_noise_search_node_on_an_empty_wan_video_latent(algorithm, tiny_dirs, tmp_path):
    """Reward Noise Search on EmptyHunyuanLatentVideo's [1, 16, 2, 4, 4] with ComfyUI's tiny WAN21 model and Wan VAE:
    a video LATENT of the same shape, its 5 frames as IMAGE, and the best score is that of those frames as a video.
    noise_gradient differentiates through Wan's fused RoPE and latent format (made in inference mode)."""
    result = run_video_script(tiny_dirs, tmp_path, f"search:{algorithm}")
    assert result["latent_in"] == result["latent_out"] == result["noise_shape"] == [1, 16, 2, 4, 4]
    assert result["image_shape"] == [5, 32, 32, 3] and result["image_std"] > 0.01
    assert result["summary"].startswith(f"{algorithm}: best score") and "3 candidates" in result["summary"]
    assert result["rescored"] == pytest.approx([result["best"]], abs=1e-5)
    assert result["decode_vs_image"] <= 1e-5  # the IMAGE is the returned LATENT decoded


@pytest.mark.parametrize("algorithm", ["raft", "grpo", "refl"])
def test_reward_lora_trainer_on_a_tiny_wan_video_model(algorithm, tiny_dirs, tmp_path):
    """The trainer on ComfyUI's tiny WAN21 model (its fused RoPE needs the pack's backward; refl differentiates
    through Wan's latent format, whose tensors ComfyUI makes in inference mode) with a video latent: it
    trains 2 steps scoring 5-frame videos, writes a LoRA that Load LoRA applies to every adapted layer."""
    needs_in_comfy("peft")
    result = run_video_script(tiny_dirs, tmp_path, algorithm)
    assert result["summary"].startswith(f"{algorithm}: 2 steps")
    assert result["log_steps"] == [1, 2] and all(math.isfinite(r) for r in result["rewards"])
    assert result["seen"] == ["Video(5, 32, 32, 3)"]  # the judge scored videos, not single frames
    assert result["files"] == [f"wan_{algorithm}.safetensors", f"wan_{algorithm}_run"]
    assert result["lora_keys"] == 3 * result["file_patches"] and result["file_patches"] == 10
    assert result["lora_up_max"] > 0  # trained: lora_up starts at zero


def test_reward_model_loaded_partially_streams_its_weights_with_the_same_scores(tiny_dirs):
    """ComfyUI's partial load of the reward model (a weight budget of half its size): some modules load, the rest
    stream their weights, and scores and the reward's gradient equal the fully loaded model's; an unload ends it."""
    result = last_json(run_script("comfy_inprocess_streaming.py", str(REPO), str(tiny_dirs["qwen2_5_vl"])))
    assert result["streamable"] == result["with_weights"] > 10  # every module that holds weights can stream
    assert result["lowvram"] and 0 < result["streamed"] < result["with_weights"]
    assert result["after_unload"] == 0
    assert result["partial_scores"] == pytest.approx(result["full_scores"], abs=1e-6)
    assert result["partial_grad"] == pytest.approx(result["full_grad"], abs=1e-6)
    full, minimum = result["reward_part"]
    assert 0 < minimum < full  # the trainer and noise_gradient budget only the reward model's streaming room
    assert result["refusal"].startswith("model: needs at least 0.0 GB on cpu (the trainer's copy of MODEL 0.0 GB, ")
    assert (
        "the reward model 0.0 GB of 0.0 GB (the rest streams)), but ComfyUI can use 0.0 GB there" in (result["refusal"])
    )


@pytest.mark.parametrize("quantization, judge", [("nf4", "yes_no"), ("int8", "yes_no"), ("none", "unifiedreward")])
def test_load_reward_model_with_a_quantization_and_a_judge_preset_scores_like_the_backend(
    quantization, judge, tiny_dirs
):
    """Load Reward Model's quantization (bitsandbytes layers, no gradients, kept on its device) and judge inputs:
    Score Images then gives the scores of the backend's RewardModel loaded the same way."""
    if quantization != "none":
        needs_in_comfy("bitsandbytes")
    args = [str(REPO), str(tiny_dirs["qwen2_5_vl"]), quantization, judge]
    result = last_json(run_script("comfy_inprocess_loader.py", *args))
    assert result["node"] == pytest.approx(result["backend"], abs=1e-6)
    expected = {"nf4": "Linear4bit", "int8": "Linear8bitLt", "none": "Linear"}[quantization]
    assert expected in result["linear_types"]
    assert result["differentiable"] is (quantization == "none")
