"""Run by tests/test_comfyui_inprocess.py with ComfyUI's Python: the Reward LoRA Trainer node in-process, under inference
mode as ComfyUI runs nodes, on a tiny SD1.5-shaped model (made a flow model with ModelSamplingSD3 for grpo),
a tiny real CLIP text encoder, a TAESD VAE and the tiny reward model loaded as the loader node loads it.
Prints one JSON line.

usage: COMFYUI_PATH=... python tests/comfy_inprocess_training.py <pack dir> <reward model dir> <output dir> <mode>
modes: raft | grpo | refl | nft (train and check the outputs; nft 2 steps with ComfyUI's dpmpp_2m), cancel (Cancel at a reward call of step 3, then queue
again), bad_inputs (print each bad input's error), live_progress (the per-step messages of a resumed run, sent to a
recording PromptServer)
"""

import functools
import importlib
import json
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_inprocess_search import load_pack, tiny_sd15, tiny_taesd  # noqa: E402  (puts ComfyUI on sys.path, CPU mode)

# isort: split
import comfy.model_management as mm  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.supported_models_base  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: E402

import nodes  # noqa: E402

TINY_CLIP = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 32,
    "torch_dtype": "float32",
    "vocab_size": 49408,
}
PROMPTS = "a red apple\na blue sky\na green field"


class TinyClipText(comfy.sd1_clip.SDClipModel):
    """ComfyUI's SD1 CLIP text model at a tiny size (context dim 32, as the tiny UNet expects)."""

    def __init__(self, device="cpu", dtype=None, model_options=None, **kwargs):
        super().__init__(
            device=device, dtype=dtype, textmodel_json_config=dict(TINY_CLIP), model_options=model_options or {}
        )


def tiny_clip() -> comfy.sd.CLIP:
    """A real ComfyUI CLIP (SD1 tokenizer bundled with ComfyUI) with small random weights."""
    target = comfy.supported_models_base.ClipTarget(
        comfy.sd1_clip.SD1Tokenizer, functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=TinyClipText)
    )
    clip = comfy.sd.CLIP(target=target)
    torch.manual_seed(2)
    with torch.no_grad():
        for p in clip.cond_stage_model.parameters():
            p.normal_(0, 0.02)
    return clip


def prediction(patcher, x: torch.Tensor, sigma: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """The model's denoised prediction at one noise level (through ComfyUI's loading and patches)."""
    mm.load_models_gpu([patcher])
    with torch.no_grad():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx).float()


def setup(pack_dir: str, rm_dir: str, out_dir: str, flow: bool):
    """The node class, model, clip, vae and reward model, all created in inference mode as ComfyUI would."""
    load_pack(pack_dir)
    training = importlib.import_module("rewarddance_pack.nodes.rl_training")
    memory = importlib.import_module("rewarddance_pack.nodes.memory")
    folder_paths.set_output_directory(out_dir)
    model, vae, clip = tiny_sd15(), tiny_taesd(), tiny_clip()
    if flow:
        model = ModelSamplingSD3().patch(model, 1.0)[0]
    rm = memory.load_managed(rm_dir, "fp32", "cpu", None, None)
    return training, model, vae, clip, rm


def run_node(training, model, vae, clip, rm, algorithm: str, steps: int, **overrides):
    args = dict(
        model=model,
        clip=clip,
        vae=vae,
        latent_image={"samples": torch.zeros(1, 4, 8, 8)},
        reward_model=rm,
        prompts=PROMPTS,
        negative="blurry",
        algorithm=algorithm,
        steps=steps,
        learning_rate=0.05,
        lora_rank=4,
        lora_alpha=4.0,
        group_size=3,
        sample_steps=3,
        cfg=2.0,
        scheduler="simple",
        seed=7,
        save_every=2,
        filename_prefix=f"loras/test_{algorithm}",
    )
    args.update(overrides)
    return training.RewardLoraTrainer.execute(**args)


def counting(module, name: str, calls: list) -> None:
    """Wrap module.name so each call appends to `calls` (which ComfyUI sampler functions ran)."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


def train(pack_dir: str, rm_dir: str, out_dir: str, algorithm: str) -> None:
    import comfy.k_diffusion.sampling as k_sampling

    previews, sampler_calls = [], []
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: previews.append(preview is not None)
    )
    counting(k_sampling, "sample_dpmpp_2m", sampler_calls)
    steps, extra = (2, {"sampler_name": "dpmpp_2m"}) if algorithm == "nft" else (4, {})
    with torch.inference_mode():
        training, model, vae, clip, rm = setup(pack_dir, rm_dir, out_dir, flow=algorithm == "grpo")
        if algorithm in ("grpo", "nft"):  # the tiny random VLM gives every image of a group the same score (zero std:
            # grpo skips such groups, nft sees no signal), so their plumbing is checked with a score that sees the
            # image: its redness
            rm.score = lambda images, prompt, **kw: SimpleNamespace(scores=[float(i[..., 0].mean()) for i in images])
        torch.manual_seed(5)
        x, sigma, ctx = (
            torch.randn(2, 4, 8, 8),
            torch.tensor([0.6, 0.6]) if algorithm == "grpo" else torch.tensor([3.0, 3.0]),
            torch.randn(2, 77, 32),
        )
        user_before = prediction(model, x, sigma, ctx)
        out = run_node(training, model, vae, clip, rm, algorithm, steps=steps, **extra)
        trained, lora, chart, summary = out.args
        user_after = prediction(model, x, sigma, ctx)
        trained_out = prediction(trained, x, sigma, ctx)
        final = Path(out_dir) / "loras" / f"test_{algorithm}.safetensors"
        folder_paths.add_model_folder_path("loras", str(final.parent))
        loaded = nodes.LoraLoaderModelOnly().load_lora_model_only(model, final.name, 1.0)[0]
        loaded_out = prediction(loaded, x, sigma, ctx)
        from_lora_model = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[
            0
        ]  # ComfyUI's "Load LoRA Model" path
        lora_model_out = prediction(from_lora_model, x, sigma, ctx)
    run_dir = Path(out_dir) / "loras" / f"test_{algorithm}_run"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    print(
        json.dumps(
            {
                "summary": summary,
                "chart_shape": list(chart.shape),
                "lora_keys": len(lora),
                "user_model_changed": float((user_after - user_before).abs().max()),
                "lora_effect": float((trained_out - user_before).abs().max()),
                "file_vs_trained": float((loaded_out - trained_out).abs().max()),
                "lora_model_vs_trained": float((lora_model_out - trained_out).abs().max()),
                "log_steps": [r["step"] for r in log],
                "files": sorted(p.name for p in final.parent.iterdir()),
                "previews": sum(previews),
                "trained_requires_grad": any(p.requires_grad for p in trained.model.parameters()),
                "lora_up_max": max(float(v.abs().max()) for k, v in lora.items() if "lora_up" in k),
                "sampler_calls": len(sampler_calls),
            }
        )
    )


def cancel(pack_dir: str, rm_dir: str, out_dir: str) -> None:
    """Cancel during step 3's scoring (mid-step), then queue the same node again: it resumes and finishes."""
    calls = {"n": 0}
    result = {}
    with torch.inference_mode():
        training, model, vae, clip, rm = setup(pack_dir, rm_dir, out_dir, flow=False)
        score = rm.score

        def cancelling_score(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3 + 3:  # one held-out evaluation call per prompt, then one per step: step 3
                mm.interrupt_current_processing(True)  # the user presses Cancel; the next ComfyUI layer raises
            return score(*args, **kwargs)

        rm.score = cancelling_score
        try:
            run_node(training, model, vae, clip, rm, "raft", steps=5)
            result["first_run"] = "finished"
        except mm.InterruptProcessingException:
            result["first_run"] = "interrupted"
        run_dir = Path(out_dir) / "loras" / "test_raft_run"
        result["checkpoint_step"] = json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"]
        result["files_after_cancel"] = sorted(p.name for p in (Path(out_dir) / "loras").iterdir())
        mm.interrupt_current_processing(False)  # ComfyUI clears it before the next prompt
        out = run_node(training, model, vae, clip, rm, "raft", steps=5)
        result["summary"] = out.args[3]
    result["log_steps"] = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    print(json.dumps(result))


def bad_inputs(pack_dir: str, rm_dir: str, out_dir: str) -> None:
    errors = {}
    with torch.inference_mode():
        training, model, vae, clip, rm = setup(pack_dir, rm_dir, out_dir, flow=False)
        cases = {
            "empty_prompts": dict(prompts="  \n "),
            "batch": dict(latent_image={"samples": torch.zeros(2, 4, 8, 8)}),
            "grpo_on_eps": dict(algorithm="grpo"),
            "grpo_group": dict(algorithm="grpo", group_size=1),
            "prefix": dict(filename_prefix="../outside"),
            "learning_rate": dict(learning_rate=1.5),
            "nft_group": dict(algorithm="nft", group_size=1),
            "nft_sampler": dict(algorithm="nft", sampler_name="euler_nonexistent"),
        }
        for name, override in cases.items():
            args = {"algorithm": "raft", **override}
            try:
                run_node(training, model, vae, clip, rm, args.pop("algorithm"), steps=1, **args)
                errors[name] = "no error"
            except ValueError as exc:
                errors[name] = str(exc)
    print(json.dumps(errors))


class RecordingServer:
    """Stands in for ComfyUI's PromptServer.instance: records what the node sends the browser."""

    client_id = "browser-1"

    def __init__(self):
        self.events, self.texts = [], []

    def send_sync(self, event, data, sid=None):
        self.events.append({"event": event, "data": json.loads(json.dumps(data, allow_nan=False)), "sid": sid})

    def send_progress_text(self, text, node_id, sid=None):
        self.texts.append([node_id, text])


def live_progress(pack_dir: str, out_dir: str) -> None:
    """The trainer's per-step update for a run resumed after step 2 (steps 3 and 4 of 4, the last with a NaN std),
    with a recording PromptServer; then the same update without a server (nothing sent, nothing raised)."""
    load_pack(pack_dir)
    training = importlib.import_module("rewarddance_pack.nodes.rl_training")
    server = types.ModuleType("server")  # ComfyUI's server.py needs its whole app to import: the module it is
    server.PromptServer = type("PromptServer", (), {"instance": None})  # seen as, with the attribute nodes read
    sys.modules["server"] = server

    run_dir, final = Path(out_dir) / "run", Path(out_dir) / "lora.safetensors"
    run_dir.mkdir(parents=True)
    rows = [
        {"step": 1, "reward_mean": 0.1, "reward_std": 0.01, "window_std": 0.02, "loss": 1.0},
        {"step": 2, "reward_mean": 0.2, "reward_std": 0.02, "window_std": 0.03, "loss": 0.9},
        {"step": 3, "reward_mean": 0.3, "reward_std": 0.03, "window_std": 0.04, "loss": 0.8, "warning": "w"},
        {"step": 4, "reward_mean": 0.4, "reward_std": float("nan"), "window_std": 0.05, "loss": 0.7},
    ]
    recorder = RecordingServer()
    server.PromptServer.instance = recorder
    try:
        update = training.live_progress(4, run_dir, final, torch.nn.Linear(2, 2), "sd15", 0, "6")
        log = run_dir / "log.jsonl"
        for row in rows:  # the run logs each row before calling progress; steps 1-2 come from the first attempt
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if row["step"] > 2:
                update(row["step"], 4, row)
        server.PromptServer.instance = None
        training.live_progress(4, run_dir, final, torch.nn.Linear(2, 2), "sd15", 0, "6")(4, 4, rows[3])
    finally:
        del sys.modules["server"]
    print(json.dumps({"events": recorder.events, "texts": recorder.texts}))


def main() -> None:
    pack_dir, rm_dir, out_dir, mode = sys.argv[1:5]
    if mode == "cancel":
        return cancel(pack_dir, rm_dir, out_dir)
    if mode == "bad_inputs":
        return bad_inputs(pack_dir, rm_dir, out_dir)
    if mode == "live_progress":
        return live_progress(pack_dir, out_dir)
    return train(pack_dir, rm_dir, out_dir, mode)


if __name__ == "__main__":
    main()
