"""`rewarddance train`: LoRA RL fine-tuning of a generator with the reward (raft, refl, grpo, ...)."""

from __future__ import annotations

import argparse
import json

from .command import Command
from .training_runs import log_training_to_stderr, process_device, run_with_progress


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance train`."""
    p.add_argument("--config", required=True, help="TOML or YAML run config (see README)")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--accelerate", action="store_true", help="running under `accelerate launch` (several processes)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_train(args: argparse.Namespace) -> int:
    """LoRA RL fine-tuning of a generator with the reward (raft, refl, grpo, nft); Ctrl+C checkpoints, the same command resumes."""
    from ..rl.config import load_rl_config
    from ..rl.run import train_rl

    log_training_to_stderr()
    cfg = load_rl_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
        cfg.validate()
    device = process_device(args.accelerate)  # one GPU per process
    if device is not None:
        cfg.generator.setdefault("device", device)
        for reward in cfg.rewards:
            reward.setdefault("device", device)
    summary = run_with_progress(
        lambda progress: train_rl(cfg, progress=progress),
        cfg.steps,
        f"train {cfg.algorithm}",
        lambda row: {"reward": f"{row['reward_mean']:.3f}", "std": f"{row['window_std']:.3f}"},
        args.quiet,
    )
    if summary is None:
        return 0
    if summary["interrupted"]:
        print(
            f"interrupted at step {summary['step']}; checkpoint in {summary['checkpoint']} (run the same command to resume)"
        )
        return 130
    print(json.dumps(summary, indent=2) if args.json else summary_line(cfg.algorithm, summary))
    return 0


def summary_line(algorithm: str, summary: dict) -> str:
    """'raft: held-out reward 0.0001234 -> 0.0001567 after 20 steps; LoRA: a, b; chart: c' (4 significant digits)."""
    files = dict(summary["files"])
    chart = files.pop("chart", None)
    line = (
        f"{algorithm}: held-out reward {summary['reward_before']:.4g} -> {summary['reward_after']:.4g} after "
        f"{summary['step']} steps; LoRA: {', '.join(files.values())}"
    )
    return line + (f"; chart: {chart}" if chart else "")


COMMANDS = (
    Command(
        "train",
        "LoRA RL fine-tuning of a generator with the reward (raft, refl, grpo, nft)",
        add_train_arguments,
        cmd_train,
        interrupt_hint="the last checkpoint is kept; run the same command to resume",
    ),
)
