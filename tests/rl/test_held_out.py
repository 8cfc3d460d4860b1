"""Held-out curves of an RL run: the training reward, monitors (measured, never optimised) and the KL to the
frozen model every `eval_every` steps; the new reward kinds and how their settings are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from rewarddance.backend.generators.protocol import seeded_noise  # noqa: E402
from rewarddance.backend.generators.sampling import sample  # noqa: E402
from rewarddance.backend.generators.tiny_checkpoint import save_tiny_generator  # noqa: E402
from rewarddance.backend.generators.tiny_flow import train_tiny_flow  # noqa: E402
from rewarddance.backend.rewards.statistics import warmth  # noqa: E402
from rewarddance.backend.rl.config import RLConfig, build_policy, load_rl_config  # noqa: E402
from rewarddance.backend.rl.evaluation import held_out_metrics  # noqa: E402
from rewarddance.backend.rl.run import EVAL_SEED_BASE, train_rl  # noqa: E402
from rewarddance.backend.run_log import read_rows  # noqa: E402


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory) -> Path:
    return save_tiny_generator(train_tiny_flow(steps=120, seed=0), tmp_path_factory.mktemp("gen") / "gen")


def run_config(tmp_path: Path, gen: Path, **extra) -> RLConfig:
    values = dict(
        algorithm="refl",
        out=str(tmp_path / "run"),
        prompts=["a red picture"],
        steps=4,
        learning_rate=3e-3,
        lora_rank=4,
        lora_alpha=8,
        eval_seeds=4,
        save_every=0,
        generator=str(gen),
        rewards=[{"kind": "colour"}],
        monitors=[{"kind": "statistic", "name": "warmth"}, {"kind": "statistic", "name": "symmetry"}],
        eval_every=2,
        trainer={"group_size": 4, "sample_steps": 6, "grad_steps": 2},
    )
    return RLConfig(**(values | extra))


def test_held_out_curves_are_logged_every_eval_every_steps(generator_dir, tmp_path):
    cfg = run_config(tmp_path, generator_dir)
    summary = train_rl(cfg)
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert set(before) == {"reward", "kl", "warmth", "symmetry"} == set(after)
    assert before["kl"] == 0.0  # a fresh LoRA (B = 0) is the frozen model
    assert after["kl"] > 0.0
    assert before["reward"] == summary["reward_before"] and after["reward"] == summary["reward_after"]
    rows = read_rows(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in rows if "held_out" in r] == [2]  # step 4 is the final evaluation, in the summary
    assert set(rows[1]["held_out"]) == {"reward", "kl", "warmth", "symmetry"}
    assert (tmp_path / "run" / "chart.png").is_file()

    # the monitors are the statistics of the policy's own held-out ODE samples: recompute one
    policy, _ = build_policy(cfg)
    gen = policy.generator_for("a red picture")
    noise = torch.cat([seeded_noise(gen, 1, EVAL_SEED_BASE + i) for i in range(4)])
    with torch.no_grad():
        expected = float(warmth(gen.decode(sample(gen, noise, 6))).mean())
    assert before["warmth"] == pytest.approx(expected, abs=1e-6)


def test_held_out_metrics_measure_monitors_on_the_same_samples(generator_dir, tmp_path):
    policy, _ = build_policy(run_config(tmp_path, generator_dir))
    monitors = lambda prompt: {"twice": lambda images: 2 * warmth(images), "once": lambda images: warmth(images)}  # noqa: E731
    metrics = held_out_metrics(policy, ["p"], [1, 2, 3], steps=4, monitors=monitors)
    assert metrics["twice"] == pytest.approx(2 * metrics["once"])
    assert metrics["kl"] == 0.0


def test_a_python_judge_reward_and_a_worst_case_ensemble_from_a_config_file(generator_dir, tmp_path):
    (tmp_path / "taste.py").write_text(
        "def blueness(images):\n    return images[..., 2].mean(dim=(1, 2)) - images[..., 0].mean(dim=(1, 2))\n"
    )
    (tmp_path / "run.toml").write_text(
        f'algorithm = "raft"\nout = "run"\nprompts = ["a photo"]\nsteps = 1\nsave_every = 0\neval_seeds = 2\n'
        f'generator = "{generator_dir}"\nreward_combine = "min"\n'
        'rewards = [{ kind = "python", function = "taste.py:blueness" }, { kind = "statistic", name = "warmth" }]\n'
        'monitors = [{ kind = "python", function = "taste.py:blueness", label = "blue" }]\n'
        "trainer = { group_size = 2, sample_steps = 2, raft_updates = 1 }\n"
    )
    cfg = load_rl_config(tmp_path / "run.toml")
    assert cfg.rewards[0]["function"] == f"{tmp_path / 'taste.py'}:blueness"  # relative to the file
    policy, _ = build_policy(cfg)
    images = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    blue = images[..., 2].mean(dim=(1, 2)) - images[..., 0].mean(dim=(1, 2))
    assert torch.allclose(policy.reward_for("a photo")(images), torch.minimum(blue, warmth(images)))
    assert torch.allclose(policy.monitors_for("a photo")["blue"](images), blue)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rewards": [{"kind": "statistic", "name": "beauty"}]}, "needs `name`, one of warmth"),
        ({"rewards": [{"kind": "python", "function": "taste.py"}]}, 'needs `function = "judge.py:name"`'),
        ({"rewards": [{"kind": "pairwise_group"}]}, "a pairwise_group entry of rewards needs `model`"),
        ({"monitors": [{"kind": "pointwise"}]}, "a pointwise entry of monitors needs `model`"),
        ({"monitors": ["warmth"]}, "monitors: each entry is a table"),
        ({"monitors": [{"kind": "statistic", "name": "warmth"}] * 2}, "give each a `label`"),
        ({"reward_combine": "max"}, "reward_combine must be one of sum, min"),
        ({"reward_combine": "min", "reward_weights": [1.0]}, "takes no weights"),
        ({"eval_every": -1}, "eval_every must be 0"),
        ({"eval_every": True}, "eval_every must be 0"),
    ],
)
def test_bad_reward_and_monitor_settings_are_named(change, message, tmp_path, generator_dir):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("`", "`")):
        run_config(tmp_path, generator_dir, **change).validate()
