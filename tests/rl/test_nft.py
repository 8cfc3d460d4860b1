"""DiffusionNFT (backend/rl/nft.py) on the tiny flow generator with a visible reward (redness): the loss by hand,
training that raises the held-out reward, any sampler, the EMA old policy, and bad knobs named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_tiny_flow

pytest.importorskip("peft")

from rewarddance.backend.generators.protocol import seeded_noise  # noqa: E402
from rewarddance.backend.generators.sampling import sample, sample_dpmpp_2m, sample_heun  # noqa: E402
from rewarddance.backend.generators.tiny_flow import TinyFlowGenerator, TinyVelocityNet  # noqa: E402
from rewarddance.backend.rewards import ColourReward  # noqa: E402
from rewarddance.backend.rl.config import RLConfig  # noqa: E402
from rewarddance.backend.rl.lora import LoraSpec, adapters_disabled, add_lora  # noqa: E402
from rewarddance.backend.rl.nft import (  # noqa: E402
    OldPolicy,
    nft_loss,
    nft_step,
    normalised_rewards,
    old_policy_decay,
)
from rewarddance.backend.rl.run import train_rl  # noqa: E402
from rewarddance.backend.rl.trainers import Optimizing, Policy, TrainerConfig  # noqa: E402


@pytest.fixture(scope="module")
def base_flow(tmp_path_factory) -> Path:
    """A tiny flow model fitted to photo crops once, saved where configs can point at it."""
    return write_tiny_flow(tmp_path_factory.mktemp("base"))


def nft_config(tmp_path: Path, base: Path, steps: int, **trainer) -> RLConfig:
    return RLConfig(
        algorithm="nft",
        out=str(tmp_path / "nft"),
        prompts=["a red picture"],
        steps=steps,
        learning_rate=3e-3,
        lora_rank=4,
        lora_alpha=8,
        eval_seeds=8,
        save_every=0,
        generator={"kind": "tiny", "path": str(base)},
        trainer={"group_size": 8, "sample_steps": 6, **trainer},
    )


def tiny_policy(base: Path, **extra) -> tuple[Policy, TinyFlowGenerator]:
    from safetensors.torch import load_file

    net = TinyVelocityNet()
    net.load_state_dict(load_file(str(base)))
    gen = TinyFlowGenerator(net)
    params = add_lora(gen.net, LoraSpec(4, 8.0), seed=0)
    return Policy(lambda p: gen, lambda p: ColourReward(0), gen.net, params, **extra), gen


def test_the_loss_equals_the_hand_computation():
    x0_theta, x0_old, x0 = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 0.0]])
    # beta 0.5: positive = 0.5 old + 0.5 theta = [2, 0], error [1.5, 0]: mean square 1.125 / mean |.| 0.75 = 1.5;
    # negative = 1.5 old - 0.5 theta = [0, -2], error [-0.5, -2]: 2.125 / 1.25 = 1.7; r = 0.75, adv_clip 5:
    # 5 * (0.75 * 1.5 + 0.25 * 1.7) / 0.5 = 15.5
    loss = nft_loss(x0_theta, x0_old, x0, torch.tensor([0.75]), beta=0.5, adv_clip=5.0)
    assert loss.shape == (1,) and float(loss) == pytest.approx(15.5, rel=1e-6)
    # at the old policy the gradient is the reward-weighted denoising one, for every beta:
    # adv_clip * 2 (2r - 1) (x0_old - x0) / (elements * mean |x0_old - x0|)
    for beta in (1.0, 0.1):
        theta = x0_old.clone().requires_grad_(True)
        nft_loss(theta, x0_old, x0, torch.tensor([0.75]), beta=beta, adv_clip=5.0).sum().backward()
        expected = 5.0 * 2 * 0.5 * (x0_old - x0) / (2 * (x0_old - x0).abs().mean())
        assert torch.allclose(theta.grad, expected, atol=1e-6)
    # rewards -> [0, 1]: the group mean is 1/2, +-adv_clip the ends
    assert normalised_rewards(torch.tensor([-5.0, 0.0, 2.5, 9.0]), 5.0).tolist() == [0.0, 0.5, 0.75, 1.0]


def test_a_fixed_seed_run_raises_the_held_out_reward(base_flow, tmp_path):
    summary = train_rl(nft_config(tmp_path, base_flow, 6, nft_timesteps=3))
    assert summary["step"] == 6 and summary["skipped_updates"] == 0 and summary["algorithm"] == "nft"
    assert summary["reward_after"] > summary["reward_before"] + 0.05, summary
    assert (tmp_path / "nft" / "lora_comfyui.safetensors").is_file()


def test_any_sampler_gives_the_clean_samples(base_flow):
    """With a Heun sampler on the policy the step scores (and trains on) exactly Heun's samples."""
    policy, gen = tiny_policy(base_flow, sample_clean=sample_heun)
    cfg = TrainerConfig(group_size=4, sample_steps=4, minibatches=2, nft_timesteps=2).validate()
    updates = []
    metrics = nft_step(policy, cfg, ["a"], 11, Optimizing(lambda loss: loss.backward(), lambda: updates.append(1)))
    with torch.no_grad():
        expected = ColourReward(0)(gen.decode(sample_heun(gen, seeded_noise(gen, 4, 11), 4)))
    assert metrics["reward_mean"] == pytest.approx(float(expected.mean()), abs=1e-6)
    assert updates == [1, 1] and metrics["loss"] > 0 and metrics["kl"] == 0.0
    lora_b = [p for n, p in policy.network.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and float(p.grad.abs().max()) > 0 for p in lora_b)


def test_nft_sampler_picks_the_ode_sampler_of_the_clean_samples(base_flow):
    policy, gen = tiny_policy(base_flow)
    cfg = TrainerConfig(group_size=4, sample_steps=4, minibatches=1, nft_timesteps=1, nft_sampler="dpmpp_2m")
    metrics = nft_step(policy, cfg.validate(), ["a"], 12, Optimizing(lambda loss: loss.backward(), lambda: True))
    with torch.no_grad():
        expected = ColourReward(0)(gen.decode(sample_dpmpp_2m(gen, seeded_noise(gen, 4, 12), 4)))
        euler = ColourReward(0)(gen.decode(sample(gen, seeded_noise(gen, 4, 12), 4)))
    assert metrics["reward_mean"] == pytest.approx(float(expected.mean()), abs=1e-6)
    assert abs(float(expected.mean()) - float(euler.mean())) > 1e-4  # a different sampler, not Euler again


def test_training_with_another_sampler_raises_the_reward(base_flow):
    policy, gen = tiny_policy(base_flow, sample_clean=sample_heun)
    opt = torch.optim.AdamW(policy.params, lr=3e-3)

    def update() -> bool:
        opt.step()
        opt.zero_grad()
        return True

    cfg = TrainerConfig(group_size=8, sample_steps=4, nft_timesteps=2).validate()
    held_out = lambda: float(ColourReward(0)(gen.decode(sample_heun(gen, seeded_noise(gen, 8, 10**6), 4))).mean())  # noqa: E731
    with torch.no_grad():
        before = held_out()
    for step in range(5):
        nft_step(policy, cfg, ["a"], 1000 * (step + 1), Optimizing(lambda loss: loss.backward(), update))
    with torch.no_grad():
        assert held_out() > before + 0.03


def test_kl_to_the_frozen_model_is_zero_before_the_lora_moves(base_flow):
    policy, _ = tiny_policy(base_flow)
    cfg = TrainerConfig(group_size=2, sample_steps=3, minibatches=1, kl_beta=0.1).validate()
    metrics = nft_step(policy, cfg, ["a"], 3, Optimizing(lambda loss: loss.backward(), lambda: True))
    assert metrics["kl"] == 0.0 and metrics["old_deviation"] == 0.0  # lora_B starts at zero; one update, not applied


def test_the_old_policy_decay_follows_the_papers_schedules():
    slow = TrainerConfig(nft_decay_rate=0.001, nft_decay_max=0.5)
    assert [old_policy_decay(slow, s) for s in (0, 100, 499, 2000)] == pytest.approx([0.0, 0.1, 0.499, 0.5])
    late = TrainerConfig(nft_decay_rate=0.0075, nft_decay_max=0.999, nft_decay_start=75)
    assert [old_policy_decay(late, s) for s in (0, 74, 75, 100, 400)] == pytest.approx([0, 0, 0, 0.1875, 0.999])
    assert old_policy_decay(TrainerConfig(), 10_000) == 0.0


def _perturb_lora(policy: Policy, scale: float = 0.05) -> list[torch.Tensor]:
    """Give every LoRA tensor a seeded random value (lora_B starts at zero); the values, cloned."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in policy.params:
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return [p.detach().clone() for p in policy.params]


def test_an_ema_old_policy_at_decay_zero_is_the_step_start_weights(base_flow):
    """With the EMA copy made at the step's start and decay 0, the step equals the copy-free path exactly, and the
    copy ends equal to the trained weights."""
    cfg = TrainerConfig(group_size=4, sample_steps=3, minibatches=2, nft_timesteps=2).validate()
    results = []
    for with_copy in (False, True):
        policy, _ = tiny_policy(base_flow)
        _perturb_lora(policy)
        opt = torch.optim.SGD(policy.params, lr=0.05)
        old = OldPolicy(policy.params) if with_copy else None
        metrics = nft_step(policy, cfg, ["a"], 7, Optimizing(lambda loss: loss.backward(), _stepper(opt)), old, 0)
        results.append((metrics, [p.detach().clone() for p in policy.params], old))
    (plain, plain_params, _), (ema, ema_params, old) = results
    assert ema["reward_mean"] == plain["reward_mean"] and ema["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain_params, ema_params))
    assert all(torch.equal(t, p) for t, p in zip(old.tensors, ema_params))


def test_the_ema_old_policy_samples_predicts_and_moves_by_its_decay(base_flow):
    """The old weights (here: the base model) sample the step's images; the trained weights are put back for the
    update; afterwards old = d old + (1 - d) theta with d of the step."""
    policy, gen = tiny_policy(base_flow)
    base = [p.detach().clone() for p in policy.params]  # lora_B = 0: the LoRA is off
    old = OldPolicy(policy.params)
    trained = _perturb_lora(policy)
    cfg = TrainerConfig(group_size=4, sample_steps=3, minibatches=1, nft_decay_rate=0.25, nft_decay_max=0.5).validate()
    seen = []
    metrics = nft_step(policy, cfg, ["a"], 9, Optimizing(lambda loss: seen.append(loss), lambda: True), old, step=1)
    with torch.no_grad(), adapters_disabled(policy.network):
        expected = ColourReward(0)(gen.decode(sample(gen, seeded_noise(gen, 4, 9), 3)))
    assert metrics["reward_mean"] == pytest.approx(float(expected.mean()), abs=1e-6)
    assert metrics["old_deviation"] > 0  # x0_old came from the base model, x0_theta from the trained LoRA
    assert all(torch.equal(p.detach(), t) for p, t in zip(policy.params, trained))  # no update was applied
    assert all(
        torch.allclose(o, 0.25 * b + 0.75 * t, atol=1e-7) for o, b, t in zip(old.tensors, base, trained)
    )  # decay at step 1: min(0.25 * 1, 0.5)


def test_a_run_with_an_ema_old_policy_checkpoints_it_and_resumes_to_the_same_weights(base_flow, tmp_path):
    from safetensors.torch import load_file

    knobs = {"nft_timesteps": 2, "nft_decay_rate": 0.3, "nft_decay_max": 0.5, "sample_steps": 3, "group_size": 4}
    straight = train_rl(nft_config(tmp_path / "straight", base_flow, 3, **knobs))
    train_rl(nft_config(tmp_path / "split", base_flow, 2, **knobs))
    saved = load_file(str(tmp_path / "split" / "nft" / "checkpoint" / "trainable.safetensors"))
    olds = [n for n in saved if n.startswith("nft_old.")]
    assert olds and len(olds) * 2 == len(saved)
    assert any(not torch.equal(saved[n], saved[n.removeprefix("nft_old.")]) for n in olds)  # decay 0.3 after step 1
    resumed = train_rl(nft_config(tmp_path / "split", base_flow, 3, **knobs))
    assert resumed["step"] == 3 and resumed["reward_after"] == pytest.approx(straight["reward_after"], abs=1e-6)
    final = {
        run: load_file(str(tmp_path / run / "nft" / "checkpoint" / "trainable.safetensors"))
        for run in ("straight", "split")
    }
    assert all(torch.allclose(final["straight"][n], final["split"][n], atol=1e-6) for n in final["straight"])


def _stepper(opt: torch.optim.Optimizer):
    """An Optimizing.step that applies and clears the gradients."""

    def step() -> bool:
        opt.step()
        opt.zero_grad()
        return True

    return step


@pytest.mark.parametrize(
    "trainer, message",
    [
        ({"nft_beta": 0}, "nft_beta=0"),
        ({"nft_beta": 1.5}, r"nft_beta=1.5 .*nft_beta in \(0, 1\]"),
        ({"nft_beta": "high"}, "nft_beta='high'"),
        ({"nft_timesteps": 7}, "nft_timesteps=7 .*nft_timesteps from 0"),
        ({"nft_timesteps": -1}, "nft_timesteps=-1"),
        ({"nft_sampler": "dpm"}, "nft_sampler='dpm' .*nft_sampler one of euler, heun, dpmpp_2m"),
        ({"nft_decay_rate": -0.1}, r"nft_decay_rate=-0.1 .*nft_decay_rate in \[0, 1\]"),
        ({"nft_decay_max": 1.0}, r"nft_decay_max=1.0 .*nft_decay_max in \[0, 1\)"),
        ({"nft_decay_start": 1.5}, "nft_decay_start=1.5"),
        ({"group_size": 1}, "trainer.group_size: nft normalises"),
        ({"nft_betas": 1}, "unknown key.*nft_betas"),
    ],
)
def test_bad_knobs_are_named(trainer, message, base_flow, tmp_path):
    with pytest.raises(ValueError, match=message):
        nft_config(tmp_path, base_flow, 2, **trainer).validate()


def test_the_train_command_takes_nft_and_names_a_bad_knob(tmp_path, capsys):
    from rewarddance.backend.cli import main
    from rewarddance.backend.rl.config import load_rl_config

    path = tmp_path / "nft.toml"
    path.write_text(
        'algorithm = "nft"\nout = "o"\nprompts = ["a"]\n[trainer]\nnft_beta = 0.1\nnft_timesteps = 3\n'
        'nft_sampler = "dpmpp_2m"\nnft_decay_rate = 0.001\n'
    )
    tcfg = load_rl_config(path).trainer_config()
    assert (tcfg.nft_beta, tcfg.nft_timesteps, tcfg.nft_sampler, tcfg.nft_decay_rate) == (0.1, 3, "dpmpp_2m", 0.001)
    path.write_text('algorithm = "nft"\nout = "o"\nprompts = ["a"]\n[trainer]\nnft_beta = 2\n')
    assert main(["train", "--config", str(path)]) == 2
    assert "nft_beta=2" in capsys.readouterr().err
