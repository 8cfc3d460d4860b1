"""grpo's sliding SDE window (MixGRPO) and trajectory branching (TempFlow-GRPO style) on a random tiny flow model:
the window's schedule, today's fixed window unchanged, the shared branch prefix, the gradient-call counts and the
knobs' messages. (That each option raises a held-out gold judge is in tests/test_steer_loop.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from rewarddance.backend.generators.protocol import seeded_noise  # noqa: E402
from rewarddance.backend.generators.sampling import euler_step, sample  # noqa: E402
from rewarddance.backend.generators.tiny_flow import TinyFlowGenerator, TinyVelocityNet  # noqa: E402
from rewarddance.backend.rewards import ColourReward  # noqa: E402
from rewarddance.backend.rl.config import RLConfig  # noqa: E402
from rewarddance.backend.rl.lora import LoraSpec, add_lora  # noqa: E402
from rewarddance.backend.rl.run import train_rl  # noqa: E402
from rewarddance.backend.rl.trainers import (  # noqa: E402
    Optimizing,
    Policy,
    TrainerConfig,
    grpo_step,
    sample_branches,
    sample_trajectory,
    sde_window,
)

# grpo_step's metrics (reward mean, reward std, loss, kl, ratio mean) and the LoRA's total movement before the sliding
# window and branching were added (commit 573d25a's grpo_step, one torch thread): two training steps, Adam lr 1e-2,
# on `random_policy`; the loss is a sum of nearly cancelling terms, hence its absolute tolerance
TODAY = {
    (): (
        [(0.09554599970579147, 0.041811589151620865, -0.00019114557653665543, 0.0, 1.0000600516796112),
         (0.09245004504919052, 0.05156172811985016, 6.593484431505203e-05, 0.0, 0.9992818459868431)],
        39.02188935369486,
    ),
    (("window", 2), ("kl_beta", 0.1)): (
        [(0.07623368501663208, 0.056182052940130234, -0.0001000023994492949, 4.424940561875701e-05, 1.000153511762619),
         (0.12073051929473877, 0.04649827629327774, -0.0007120529262465425, 0.002092709510179702, 0.9986166954040527)],
        47.132900898868684,
    ),
}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these 8x8 images are too small to share, and a busy CI machine makes two threads slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_policy(reward=None) -> tuple[Policy, TinyFlowGenerator]:
    """A random-weight tiny flow model (8x8, width 16) with a LoRA, rewarded by redness (or `reward`)."""
    torch.manual_seed(0)
    gen = TinyFlowGenerator(TinyVelocityNet(width=16), size=8)
    params = add_lora(gen.net, LoraSpec(4, 8.0), seed=0)
    return Policy(lambda p: gen, lambda p: reward or ColourReward(0), gen.net, params), gen


def train_steps(cfg: TrainerConfig, first_step: int = 0, reward=None, n: int = 2) -> tuple[list[dict], float]:
    """`n` grpo steps (training step indices first_step, first_step + 1, ...); their metrics and how far the LoRA
    moved."""
    policy, _ = random_policy(reward)
    start = [p.detach().clone() for p in policy.params]
    opt = torch.optim.Adam(policy.params, lr=1e-2)

    def update() -> bool:
        opt.step()
        opt.zero_grad()
        return True

    rows = [
        grpo_step(
            policy, cfg, ["a", "b"], 11 + s, Optimizing(lambda loss: loss.backward(), update), step=first_step + s
        )
        for s in range(n)
    ]
    return rows, sum(float((p.detach() - q).abs().double().sum()) for p, q in zip(policy.params, start))


def test_the_sliding_window_follows_the_hand_computed_schedule():
    cfg = TrainerConfig(sample_steps=8, window=2, window_mode="sliding", window_shift_every=3, window_stride=2)
    # starts 0, 2, 4 (a window at 6 would reach the last step 7), three training steps each, then back to 0
    expected = [[0, 1]] * 3 + [[2, 3]] * 3 + [[4, 5]] * 3 + [[0, 1]] * 3
    assert [sde_window(cfg.validate(), step) for step in range(12)] == expected
    one = TrainerConfig(sample_steps=5, window=3, window_mode="sliding", window_shift_every=1).validate()
    assert [sde_window(one, step) for step in range(4)] == [[0, 1, 2], [1, 2, 3], [0, 1, 2], [1, 2, 3]]
    fixed = TrainerConfig(sample_steps=8, window=2).validate()
    assert {tuple(sde_window(fixed, step)) for step in range(20)} == {(0, 1)}
    assert sde_window(TrainerConfig(sample_steps=8).validate(), 5) == [0, 1, 2, 3, 4, 5, 6]
    assert sde_window(TrainerConfig(sample_steps=8, branch_at=3).validate(), 5) == [3]
    _, gen = random_policy()
    noise = seeded_noise(gen, 2, 0)
    with torch.no_grad():  # the SDE (and its log-probs) run exactly on the window's steps, Euler elsewhere
        for step in (0, 4, 7, 10):
            states, logps = sample_trajectory(gen, noise, cfg, seed=1, step=step)
            assert sorted(logps) == expected[step] and len(states) == 9


def test_a_run_logs_the_window_it_trained_at_each_step(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in TinyVelocityNet(width=16).state_dict().items()}, str(base))
    cfg = RLConfig(
        algorithm="grpo",
        out=str(tmp_path / "run"),
        prompts=["a"],
        steps=5,
        lora_rank=2,
        lora_alpha=4.0,
        prompts_per_step=1,
        eval_seeds=1,
        save_every=0,
        generator={"kind": "tiny", "path": str(base), "size": 8},
        trainer={"group_size": 2, "sample_steps": 4, "window": 1, "window_mode": "sliding", "window_shift_every": 2},
    )
    train_rl(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    # starts 0, 1, 2 every two steps: run steps 1..5 are training steps 0..4
    assert [r["window_start"] for r in rows] == [0, 0, 1, 1, 2]
    assert [r["grad_calls"] for r in rows] == [1] * 5 and [r["sample_calls"] for r in rows] == [4] * 5


@pytest.mark.parametrize("knobs", list(TODAY))
def test_the_fixed_window_is_todays_grpo_at_every_training_step(knobs):
    cfg = TrainerConfig(group_size=4, sample_steps=5, clip_range=0.2, **dict(knobs)).validate()
    rows, moved = train_steps(cfg)
    today, today_moved = TODAY[knobs]
    got = [(r["reward_mean"], r["reward_std"], r["loss"], r["kl"], r["ratio_mean"]) for r in rows]
    assert got == [pytest.approx(t, rel=1e-5, abs=2e-7) for t in today]
    assert moved == pytest.approx(today_moved, rel=1e-5)
    later, later_moved = train_steps(cfg, first_step=37)  # a fixed window ignores the training step
    assert later == rows and later_moved == moved
    if cfg.window:  # a sliding window while it is still at step 0 is the fixed window
        sliding = TrainerConfig(**{**vars(cfg), "window_mode": "sliding", "window_shift_every": 2}).validate()
        slid_rows, slid_moved = train_steps(sliding)
        assert [{k: v for k, v in r.items() if k != "window_start"} for r in slid_rows] == rows
        assert slid_moved == moved and [r["window_start"] for r in slid_rows] == [0, 0]


def test_branches_share_the_prefix_and_differ_after_it():
    cfg = TrainerConfig(group_size=3, sample_steps=6, branch_at=2, branches=4).validate()
    _, gen = random_policy()
    noise = seeded_noise(gen, 3, 5)
    sigmas = gen.sigmas(6)
    with torch.no_grad():
        members = sample_branches(gen, noise, cfg, seed=9)
        prefix = sample(gen, noise, 6, stop=2)  # the ODE state at the branch step
        assert len(members) == 3
        for m, (states, logps) in enumerate(members):
            assert len(states) == 7 and sorted(logps) == [2] and logps[2].shape == (4,)
            assert all(s.shape[0] == 1 for s in states[:3]) and all(s.shape[0] == 4 for s in states[3:])
            assert torch.allclose(states[2][0], prefix[m], atol=1e-6)  # one shared state per member up to step 2
            for later in states[3:]:  # then four different branches
                assert all(not torch.equal(later[a], later[b]) for a in range(4) for b in range(a + 1, 4))
            x = states[3]
            for i in range(3, 6):  # each branch is finished with Euler steps
                x, _ = euler_step(gen, x, sigmas[i], sigmas[i + 1])
            assert torch.allclose(x, states[-1], atol=1e-5)


def test_grad_calls_count_the_trained_transitions():
    cases = [  # knobs -> denoiser calls with gradient per training step (2 prompts, minibatches 2)
        ({}, 2 * 4),  # SDE on 4 of 5 steps, one batched call per step per prompt
        ({"window": 2}, 2 * 2),
        ({"window": 2, "window_mode": "sliding", "window_shift_every": 1}, 2 * 2),
        ({"branch_at": 1, "branches": 3}, 2 * 4),  # one call per group member (group_size 4) at the branch step
    ]
    for knobs, grad_calls in cases:
        cfg = TrainerConfig(group_size=4, sample_steps=5, clip_range=0.2, **knobs).validate()
        n = 2 if "window_mode" in knobs else 1  # the sliding window moves between its two steps
        rows, _ = train_steps(cfg, n=n)
        assert [r["grad_calls"] for r in rows] == [grad_calls] * n, knobs
        sample_calls = 2 * (5 - 1 + 4) if "branch_at" in knobs else 2 * 5
        assert [r["sample_calls"] for r in rows] == [sample_calls] * n, knobs
        assert [r.get("window_start") for r in rows] == ([0, 1] if "window_mode" in knobs else [None])
    cfg = TrainerConfig(group_size=4, sample_steps=5, branch_at=1)
    flat, _ = train_steps(cfg, reward=lambda images: images[:, 0, 0, 0] * 0, n=1)
    assert (flat[0]["grad_calls"], flat[0]["zero_std_ratio"]) == (0, 1.0)  # equal rewards: nothing is trained


def test_branching_ratios_start_at_one_and_each_member_is_its_own_group():
    policy, _ = random_policy()
    cfg = TrainerConfig(group_size=3, sample_steps=4, branch_at=1, branches=4, minibatches=1, clip_range=0.2)
    ratios: list[torch.Tensor] = []
    updates: list[int] = []
    row = grpo_step(
        policy, cfg.validate(), ["a"], 3, Optimizing(lambda loss: loss.backward(), lambda: updates.append(1) or True),
        ratio_probe=ratios,
    )  # fmt: skip
    assert updates == [1] and len(ratios) == 3 and all(r.shape == (4,) for r in ratios)
    assert all(torch.allclose(r, torch.ones(4), atol=1e-6) for r in ratios)
    assert row["grad_calls"] == 3 and row["zero_std_ratio"] == 0.0


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"window_mode": "slide"}, "window_mode must be 'fixed' or 'sliding', got 'slide'"),
        ({"window_mode": "sliding"}, r"set window to 1\.\.7 .*got window=0"),
        ({"window_mode": "sliding", "window": 8}, "window=8"),
        ({"window_mode": "sliding", "window": 2, "window_shift_every": 0}, "window_shift_every must be a positive"),
        ({"window_mode": "sliding", "window": 2, "window_stride": 1.5}, "window_stride must be a positive integer"),
        ({"branch_at": 7}, r"branch_at must be a step in 0\.\.sample_steps - 2 = 6 .*got branch_at=7"),
        ({"branch_at": -1}, "branch_at must be a step in"),
        ({"branch_at": "2"}, "branch_at must be a step index or None"),
        ({"branch_at": 2, "branches": 1}, "branches must be at least 2"),
        ({"branch_at": 2, "window": 2}, "branch_at replaces the SDE window"),
        ({"branch_at": 2, "noise_level": 0.0}, "branch_at needs noise_level > 0"),
    ],
)
def test_bad_window_and_branch_knobs_are_named(knobs, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig(sample_steps=8, **knobs).validate()
    with pytest.raises(ValueError, match="trainer: .*" + message):  # the config file's / RLConfig's path
        RLConfig(algorithm="grpo", out="x", prompts=["a"], trainer={"sample_steps": 8, **knobs}).validate()


def test_the_command_line_names_a_bad_window_knob(tmp_path: Path, capsys):
    from rewarddance.backend.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('algorithm = "grpo"\nout = "o"\nprompts = ["a"]\ntrainer = { window_mode = "sliding" }\n')
    assert main(["train", "--config", str(bad)]) == 2
    assert "trainer: window_mode 'sliding' moves a window" in capsys.readouterr().err
