"""LoRA RL trainers on the tiny flow generator with a visible, differentiable reward (redness)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_tiny_flow

pytest.importorskip("peft")

from rewarddance.backend.generators.protocol import seeded_noise as seeded  # noqa: E402
from rewarddance.backend.generators.sampling import sample  # noqa: E402
from rewarddance.backend.generators.tiny_flow import TinyFlowGenerator, TinyVelocityNet  # noqa: E402
from rewarddance.backend.rewards import ColourReward, Transformed  # noqa: E402
from rewarddance.backend.rl.config import RLConfig, load_rl_config  # noqa: E402
from rewarddance.backend.rl.export import comfyui_state_dict, load_peft_adapter, save_peft_adapter  # noqa: E402
from rewarddance.backend.rl.lora import LoraSpec, adapters_disabled, add_lora  # noqa: E402
from rewarddance.backend.rl.run import train_rl  # noqa: E402
from rewarddance.backend.rl.trainers import (  # noqa: E402
    Optimizing,
    Policy,
    TrainerConfig,
    group_advantages,
    grpo_step,
    sample_trajectory,
)

TRAINERS = {
    "raft": ({"group_size": 8, "sample_steps": 6, "raft_updates": 4}, 1e-3),
    "refl": ({"group_size": 4, "sample_steps": 6, "grad_steps": 2}, 3e-3),
    "grpo": ({"group_size": 8, "sample_steps": 6, "clip_range": 0.2}, 3e-3),
}


@pytest.fixture(scope="module")
def base_flow(tmp_path_factory) -> Path:
    """A tiny flow model fitted to photo crops once, saved where configs can point at it."""
    return write_tiny_flow(tmp_path_factory.mktemp("base"))


def config(tmp_path: Path, base: Path, algorithm: str, steps: int, **extra) -> RLConfig:
    trainer, lr = TRAINERS[algorithm]
    return RLConfig(
        algorithm=algorithm,
        out=str(tmp_path / algorithm),
        prompts=["a red picture"],
        steps=steps,
        learning_rate=lr,
        lora_rank=4,
        lora_alpha=8,
        eval_seeds=8,
        save_every=0,
        generator={"kind": "tiny", "path": str(base)},
        trainer=dict(trainer),
        **extra,
    )


def load_base(base: Path) -> TinyFlowGenerator:
    from safetensors.torch import load_file

    net = TinyVelocityNet()
    net.load_state_dict(load_file(str(base)))
    return TinyFlowGenerator(net)


@pytest.mark.parametrize("algorithm", ["raft", "refl", "grpo"])
def test_each_trainer_raises_the_held_out_reward(algorithm, base_flow, tmp_path):
    summary = train_rl(config(tmp_path, base_flow, algorithm, steps=6))
    assert summary["step"] == 6 and not summary["interrupted"] and summary["skipped_updates"] == 0
    assert summary["reward_after"] > summary["reward_before"] + 0.05, summary
    out = tmp_path / algorithm
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all({"reward_mean", "reward_std", "window_std", "loss"} <= set(r) for r in rows)
    assert (out / "chart.png").is_file() and (out / "lora_peft" / "adapter_config.json").is_file()
    assert (out / "lora_comfyui.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["reward_after"] == summary["reward_after"]


def tiny_policy(base: Path, seed: int = 0) -> tuple[Policy, TinyFlowGenerator]:
    gen = load_base(base)
    params = add_lora(gen.net, LoraSpec(4, 8.0), seed=seed)
    return Policy(lambda p: gen, lambda p: ColourReward(0), gen.net, params), gen


def test_grpo_ratio_is_exactly_one_before_the_lora_moves_and_sde_at_noise_zero_is_the_ode(base_flow):
    policy, gen = tiny_policy(base_flow)
    cfg = TrainerConfig(group_size=4, sample_steps=5, minibatches=1, clip_range=0.2)
    ratios: list[torch.Tensor] = []
    steps_taken = []
    grpo_step(
        policy,
        cfg,
        ["a"],
        seed=3,
        opt=Optimizing(lambda loss: loss.backward(), lambda: steps_taken.append(1) or True),
        ratio_probe=ratios,
    )
    assert len(ratios) == 4 and steps_taken == [1]  # all SDE steps but the last, one update
    assert all(torch.equal(r, torch.ones_like(r)) for r in ratios)
    noise = seeded(gen, 3, 9)
    with torch.no_grad():
        states, logps = sample_trajectory(gen, noise, cfg, seed=1, noise_level=0.0)
        assert torch.equal(states[-1], sample(gen, noise, 5))
        stochastic, _ = sample_trajectory(gen, noise, cfg, seed=1)
    assert not torch.equal(stochastic[-1], states[-1])


def test_group_advantages_drop_zero_std_groups_and_clip():
    adv, keep = group_advantages([torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])], per_group_std=False, clip=5.0)
    assert keep == [True, False]
    global_std = torch.tensor([1.0, 0.0, 0.5, 0.5]).std(unbiased=False)
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5]) / (global_std + 1e-4))
    adv, _ = group_advantages(
        [torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])], per_group_std=True, clip=2.0
    )
    assert float(adv[0].max()) == 2.0


def test_lora_switched_off_is_the_frozen_model_and_exports_reload_to_the_same_outputs(base_flow, tmp_path):
    gen = load_base(base_flow)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor(0.6)
    frozen = gen.denoise(x, sigma).detach()
    params = add_lora(gen.net, LoraSpec(4, 8.0), seed=1)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    trained = gen.denoise(x, sigma).detach()
    assert not torch.allclose(trained, frozen)
    with adapters_disabled(gen.net):
        assert torch.equal(gen.denoise(x, sigma), frozen)
    # PEFT directory: a fresh copy of the base model with the adapter loaded gives the trained outputs
    save_peft_adapter(gen.net, LoraSpec(4, 8.0), tmp_path / "peft")
    fresh = load_base(base_flow)
    load_peft_adapter(fresh.net, tmp_path / "peft")
    assert torch.allclose(fresh.denoise(x, sigma), trained, atol=1e-6)
    # ComfyUI format: W + alpha / rank * up @ down merged into the base weights gives the trained outputs
    state = comfyui_state_dict(gen.net)
    merged = load_base(base_flow)
    modules = dict(merged.net.named_modules())
    with torch.no_grad():
        for key in {k.rsplit(".lora_", 1)[0] for k in state if ".lora_" in k}:
            down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
            scale = float(state[f"{key}.alpha"]) / down.shape[0]
            delta = up.flatten(1) @ down.flatten(1)
            modules[key].weight += scale * delta.view_as(modules[key].weight)
    assert torch.allclose(merged.denoise(x, sigma), trained, atol=1e-5)
    assert float(state["blocks.0.alpha"]) == 8.0


def test_bad_settings_name_the_input(base_flow, tmp_path):
    with pytest.raises(ValueError, match="algorithm must be one of raft, refl, grpo"):
        config(tmp_path, base_flow, "raft", 2).__class__(algorithm="ppo", out="x", prompts=["a"]).validate()
    cfg = config(tmp_path, base_flow, "raft", 2)
    cfg.trainer["raft_keep"] = 99
    with pytest.raises(ValueError, match="raft_keep=99"):
        cfg.validate()
    cfg = config(tmp_path, base_flow, "raft", 2)
    cfg.trainer["learning_rate"] = 1
    with pytest.raises(ValueError, match="unknown key.*learning_rate"):
        cfg.validate()
    with pytest.raises(ValueError, match="prompts: .* is not a file"):
        config(tmp_path, base_flow, "raft", 2, eval_prompts=None).__class__(
            algorithm="raft", out="x", prompts=str(tmp_path / "missing.txt")
        ).validate()
    with pytest.raises(ValueError, match="needs `model`"):
        RLConfig(algorithm="raft", out="x", prompts=["a"], rewards=[{"kind": "pointwise"}]).validate()
    with pytest.raises(ValueError, match="reward transform must be one of"):
        Transformed(ColourReward(), "sqrt")
    policy, gen = tiny_policy(base_flow)
    gen.parameterization = "eps"
    with pytest.raises(ValueError, match="grpo's SDE is written for flow models"):
        sample_trajectory(gen, seeded(gen, 1, 0), TrainerConfig(), seed=0)


def test_non_finite_loss_skips_the_update_and_says_so(base_flow, tmp_path, caplog):
    class NaNOnce:
        differentiable = True
        calls = 0

        def __call__(self, images):
            NaNOnce.calls += 1
            r = ColourReward(0)(images)
            return r * float("nan") if NaNOnce.calls == 2 else r

    gen = load_base(base_flow)
    params = add_lora(gen.net, LoraSpec(4, 8.0))
    policy = Policy(lambda p: gen, lambda p: NaNOnce(), gen.net, params)
    cfg = config(tmp_path, base_flow, "refl", 3)
    summary = train_rl(cfg, policy=policy)
    assert summary["skipped_updates"] == 1 and summary["step"] == 3
    assert "non-finite loss" in caplog.text
    assert all(torch.isfinite(p).all() for p in params)


def test_train_command_line_reports_bad_configs(tmp_path, capsys):
    from rewarddance.backend.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('algorithm = "raft"\nout = "o"\nprompts = ["a"]\nlearning_rat = 1\n')
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown key(s) learning_rat" in capsys.readouterr().err
    bad.write_text('algorithm = "raft"\nout = "o"\nprompts = ["a"]\nlearning_rate = 1\n')
    assert main(["train", "--config", str(bad)]) == 2
    assert "learning_rate must be in (0, 1), got 1" in capsys.readouterr().err
    bad.write_text('algorithm = "raft"\nout = "o"\n')
    assert main(["train", "--config", str(bad)]) == 2
    assert "missing required key(s) prompts" in capsys.readouterr().err
    good = tmp_path / "prompts.txt"
    good.write_text("a red fox\n\na red car\n")
    cfg_path = tmp_path / "ok.toml"
    cfg_path.write_text('algorithm = "grpo"\nout = "o"\nprompts = "prompts.txt"\n')
    cfg = load_rl_config(cfg_path)
    assert cfg.prompt_list() == ["a red fox", "a red car"] and cfg.out == str(tmp_path / "o")


def test_comfyui_key_names_per_family():
    from rewarddance.backend.rl.export import comfyui_key

    assert (
        comfyui_key("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "unet")
        == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    )
    assert comfyui_key("transformer_blocks.0.attn.to_q", "flux") == "transformer.transformer_blocks.0.attn.to_q"
    assert (
        comfyui_key("transformer_blocks.3.attn.add_k_proj", "sd3") == "transformer.transformer_blocks.3.attn.add_k_proj"
    )
    assert comfyui_key("blocks.2.attn2.to_out.0", "wan") == "diffusion_model.blocks.2.cross_attn.o"
    assert comfyui_key("blocks.0.ffn.net.0.proj", "wan") == "diffusion_model.blocks.0.ffn.0"
    assert (
        comfyui_key("input_blocks.1.1.transformer_blocks.0.attn1.to_q", "comfy_unet")
        == "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    )
    with pytest.raises(ValueError, match="no original"):
        comfyui_key("blocks.0.norm2", "wan")


def test_an_interrupt_mid_step_checkpoints_the_last_finished_step_and_resume_finishes(base_flow, tmp_path):
    """Cancel after the first of raft's 4 updates in step 3: the checkpoint holds exactly the LoRA of step 2 (the
    half-done step is rolled back), and the resumed run ends at step 4 with each step logged once."""
    from rewarddance.backend import runs

    policy, _ = tiny_policy(base_flow)
    after_step: dict[int, list[torch.Tensor]] = {}
    updates = {"n": 0}
    original = runs.Run.optimizer_step

    def cancelling_step(self):
        updates["n"] += 1
        result = original(self)
        if self.step == 2 and updates["n"] % 4 == 1:  # step 3's first update applied, then Cancel
            raise KeyboardInterrupt
        return result

    cfg = config(tmp_path, base_flow, "raft", 4)
    runs.Run.optimizer_step = cancelling_step
    try:
        summary = train_rl(
            cfg,
            policy=policy,
            progress=lambda s, n, row: after_step.__setitem__(s, [p.detach().clone() for p in policy.params]),
        )
    finally:
        runs.Run.optimizer_step = original
    assert summary["interrupted"] and summary["step"] == 2
    assert all(torch.equal(p, q) for p, q in zip(policy.params, after_step[2]))
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "raft" / "checkpoint" / "trainable.safetensors"))
    fresh, _ = tiny_policy(base_flow)
    live = dict(fresh.network.named_parameters())
    with torch.no_grad():
        for name, tensor in saved.items():
            live[name].copy_(tensor)
    assert all(torch.equal(p, q) for p, q in zip(fresh.params, after_step[2]))
    done = train_rl(cfg, policy=tiny_policy(base_flow)[0])
    assert done["step"] == 4 and done["resumed"]
    rows = [json.loads(line) for line in (tmp_path / "raft" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_resume_refuses_a_checkpoint_of_a_different_run(base_flow, tmp_path):
    train_rl(config(tmp_path, base_flow, "raft", 1))
    other = config(tmp_path, base_flow, "raft", 2)
    other.lora_alpha = 2.0
    with pytest.raises(ValueError, match=r"saved by a different run \(lora_alpha=8 \(now 2.0\)\)"):
        train_rl(other)


def test_trainer_node_settings_prompts_paths_and_bad_values(tmp_path):
    from rewarddance.backend.rl.node_settings import NodeTraining, output_paths, prompt_lines, step_lora_path

    assert prompt_lines(" a cat \n\n a dog\n") == ["a cat", "a dog"]
    inputs, elsewhere = tmp_path / "input", tmp_path / "elsewhere"
    inputs.mkdir()
    elsewhere.mkdir()
    (inputs / "prompts.txt").write_text("one\n\ntwo\nthree\n", encoding="utf-8")
    (elsewhere / "secret.txt").write_text("root:x:0:0\n", encoding="utf-8")
    assert prompt_lines(str(inputs / "prompts.txt"), [inputs]) == ["one", "two", "three"]
    assert prompt_lines("prompts.txt", [inputs]) == ["one", "two", "three"]  # a name in the input folder
    assert prompt_lines("a photo of notes.txt", [inputs]) == ["a photo of notes.txt"]  # not a file: a prompt
    (inputs / "empty.txt").write_text("\n \n")
    for bad, message in [
        ("  \n", "prompts: enter the training prompts"),
        (str(inputs / "empty.txt"), "has no prompts"),
        (str(elsewhere / "secret.txt"), "outside the folders prompt files are read from"),  # never read
        ("../elsewhere/secret.txt", "outside the folders"),
    ]:
        with pytest.raises(ValueError, match=message):
            prompt_lines(bad, [inputs])
    os.environ["REWARDDANCE_PROMPT_DIRS"] = str(elsewhere)
    try:
        assert prompt_lines(str(elsewhere / "secret.txt"), [inputs]) == ["root:x:0:0"]  # allow-listed by the operator
    finally:
        del os.environ["REWARDDANCE_PROMPT_DIRS"]
    run_dir, final = output_paths(tmp_path, "loras/my_lora")
    assert run_dir == tmp_path / "loras" / "my_lora_run" and final == tmp_path / "loras" / "my_lora.safetensors"
    assert step_lora_path(final, 25).name == "my_lora_step00025.safetensors"
    output = tmp_path / "output"
    output.mkdir()
    (output / "out_link").symlink_to(elsewhere)  # a link inside the output folder that leads out of it
    for bad in ("../up", "", "/", "a/../../b", "bad:name", ".", "./", "a/./b", "out_link/x"):
        with pytest.raises(ValueError, match="filename_prefix"):
            output_paths(output, bad)
    ok = NodeTraining("grpo", 10, 1e-4, 8, 8.0, 4, 10, 0, 5).validate()
    cfg = ok.config(["p1", "p2", "p3", "p4", "p5"], run_dir)
    assert (
        cfg.prompts_per_step == 1
        and cfg.eval_prompts == ["p1", "p2", "p3", "p4"]
        and cfg.trainer_config().group_size == 4
    )
    for fields, message in [
        (dict(algorithm="ppo"), "algorithm must be one of"),
        (dict(group_size=1), "group_size: grpo"),
        (dict(learning_rate=2.0), "learning_rate must be in"),
        (dict(sample_steps=1), "sample_steps"),
        (dict(lora_rank=0), "lora_rank must be >= 1"),
        (dict(lora_alpha=0.0), "lora_alpha > 0"),
    ]:
        values = {
            "algorithm": "grpo",
            "steps": 10,
            "learning_rate": 1e-4,
            "lora_rank": 8,
            "lora_alpha": 8.0,
            "group_size": 4,
            "sample_steps": 10,
            "seed": 0,
            "save_every": 5,
            **fields,
        }
        with pytest.raises(ValueError, match=message):
            NodeTraining(**values).validate()
    with pytest.raises(ValueError, match="'comfyui' is for the ComfyUI Reward LoRA Trainer node"):
        train_rl(cfg)


def test_pairwise_reward_against_the_tournament_winner_trains_end_to_end(base_flow, tiny_dirs, tmp_path, monkeypatch):
    """The paper's recipe in a full run: each prompt's reference is the winner of a round robin over samples of the
    frozen model, and every training reward is P(sample beats that reference) from the same reward model."""
    from rewarddance.backend.reward_model import RewardModel
    from rewarddance.backend.rl.config import build_policy

    tournaments = []
    original = RewardModel.tournament

    def recording(self, images, prompt, **kw):
        result = original(self, images, prompt, **kw)
        tournaments.append((images.clone(), result.ranking))
        return result

    monkeypatch.setattr(RewardModel, "tournament", recording)
    cfg = RLConfig(
        algorithm="raft",
        out=str(tmp_path / "pairwise"),
        prompts=["a red picture"],
        steps=2,
        learning_rate=1e-3,
        lora_rank=4,
        lora_alpha=8,
        eval_seeds=2,
        save_every=0,
        generator={"kind": "tiny", "path": str(base_flow)},
        rewards=[
            {
                "kind": "pairwise",
                "model": str(tiny_dirs["qwen2_5_vl"]),
                "dtype": "fp32",
                "device": "cpu",
                "reference_candidates": 4,
            }
        ],
        trainer={"group_size": 2, "sample_steps": 3, "raft_updates": 1},
    )
    policy, _ = build_policy(cfg.validate())
    reward = policy.reward_for("a red picture")
    images, ranking = tournaments[-1]
    assert images.shape[0] == 4 and torch.equal(reward.reference, images[ranking[0] : ranking[0] + 1])
    candidates = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    expected = reward.model.compare(candidates, reward.reference, "a red picture").scores
    assert torch.allclose(reward(candidates), torch.tensor(expected))
    summary = train_rl(cfg, policy=policy)
    rows = [json.loads(line) for line in (tmp_path / "pairwise" / "log.jsonl").read_text().splitlines()]
    assert summary["step"] == 2 and [r["step"] for r in rows] == [1, 2]
    assert all(0 < r["reward_mean"] < 1 for r in rows) and 0 < summary["reward_after"] < 1


def test_remote_reward_through_the_scoring_backend_trains_end_to_end(base_flow, tiny_dirs, tmp_path):
    """grpo with the reward model behind `rewarddance serve`: scores arrive from the server while sampling goes on,
    and equal the in-process model's scores."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from helpers import ServerThread

    from rewarddance.backend.reward_model import RewardModel
    from rewarddance.backend.rl.config import build_policy
    from rewarddance.backend.server.app import create_app
    from rewarddance.backend.server.settings import ModelSpec, ServerSettings

    settings = ServerSettings(
        models={"judge": ModelSpec("judge", str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu")}
    )
    with ServerThread(create_app(settings)) as server:
        cfg = RLConfig(
            algorithm="grpo",
            out=str(tmp_path / "remote"),
            prompts=["a red picture", "a blue picture"],
            steps=2,
            learning_rate=1e-3,
            lora_rank=4,
            lora_alpha=8,
            eval_seeds=2,
            save_every=1,
            prompts_per_step=2,
            generator={"kind": "tiny", "path": str(base_flow)},
            rewards=[{"kind": "pointwise", "url": server.url}],
            trainer={"group_size": 3, "sample_steps": 3},
        )
        policy, _ = build_policy(cfg.validate())
        images = torch.rand(3, 16, 16, 3, generator=torch.Generator().manual_seed(1))
        remote = policy.reward_for("a red picture")
        local = RewardModel.from_pretrained(str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu")
        assert not remote.differentiable
        assert torch.allclose(
            remote.submit(images).result(), torch.tensor(local.score(images, "a red picture").scores), atol=1e-5
        )
        summary = train_rl(cfg, policy=policy)
    rows = [json.loads(line) for line in (tmp_path / "remote" / "log.jsonl").read_text().splitlines()]
    assert summary["step"] == 2 and [r["step"] for r in rows] == [1, 2]
    assert all(0 < r["reward_mean"] < 1 for r in rows)


def test_a_checkpoint_of_the_previous_release_resumes_to_the_same_weights(base_flow, tmp_path, caplog):
    """The previous release kept `checkpoint/lora.safetensors` (PEFT names) and old config keys in state.json;
    such a run continues (with a warning) and ends where an uninterrupted run ends."""
    from safetensors.torch import load_file, save_file

    straight = train_rl(config(tmp_path / "straight", base_flow, "raft", 4), policy=tiny_policy(base_flow)[0])
    cfg = config(tmp_path / "old", base_flow, "raft", 2)
    train_rl(cfg, policy=tiny_policy(base_flow)[0])
    ckpt = Path(cfg.out) / "checkpoint"
    tensors = load_file(str(ckpt / "trainable.safetensors"))
    save_file({k.replace(".default.", "."): v for k, v in tensors.items()}, str(ckpt / "lora.safetensors"))
    (ckpt / "trainable.safetensors").unlink()
    state = json.loads((ckpt / "state.json").read_text())
    old_names = {"learning_rate": "lr", "lora_rank": "rank", "lora_alpha": "alpha", "lora_targets": "targets"}
    old_config = {old_names.get(k, k): v for k, v in state["config"].items()}
    old_state = {"step": 2, "skipped": 0, "warned": False, "config": old_config}
    (ckpt / "state.json").write_text(json.dumps(old_state))
    resumed = train_rl(config(tmp_path / "old", base_flow, "raft", 4), policy=tiny_policy(base_flow)[0])
    assert resumed["resumed"] and resumed["step"] == 4 and "written by the previous release" in caplog.text
    assert resumed["reward_before"] == straight["reward_before"]
    a = load_file(str(Path(straight["checkpoint"]) / "trainable.safetensors"))
    b = load_file(str(Path(resumed["checkpoint"]) / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("algorithm", ["raft", "grpo"])
def test_a_plain_reward_callable_trains_with_every_sampling_trainer(algorithm, base_flow, tmp_path):
    """A reward needs no base class: any callable images -> [B] works (it is wrapped as a `Reward`)."""

    class Red:
        def __call__(self, images):
            return images[..., 0].flatten(1).mean(1)

    gen = load_base(base_flow)
    params = add_lora(gen.net, LoraSpec(4, 8.0))
    policy = Policy(lambda p: gen, lambda p: Red(), gen.net, params)
    summary = train_rl(config(tmp_path, base_flow, algorithm, 1), policy=policy)
    assert summary["step"] == 1 and 0 <= summary["reward_after"] <= 1
