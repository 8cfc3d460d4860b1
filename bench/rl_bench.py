"""LoRA RL trainers (RAFT, ReFL/DRaFT-K, Flow-GRPO) at the same small budget on the tiny flow generator.

Generator: the tiny pixel-space flow model, fitted here for a few seconds to crops of scikit-image's sample
photos. Reward: the visible, differentiable redness preference of the search benchmark (ReFL needs the
gradient). Each trainer gets the same number of steps and prompts per step; the held-out reward is the mean
over ODE samples from seeds the trainers never see (1000000..), before and after training.

Printed per trainer: held-out reward before -> after and the relative gain, the windowed reward std over
training (its maximum and its final value: a collapse is the reward-hacking signal), training steps per
second. Last line:
`min_gain=<smallest relative gain across trainers>`.

    python bench/rl_bench.py --quick          # CPU, about a minute
    python bench/rl_bench.py --steps 60 --group-size 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SETTINGS = {  # per trainer: its own knobs and learning rate (the rest is shared)
    "raft": ({"raft_updates": 4}, 1e-3),
    "refl": ({"grad_steps": 2}, 3e-3),
    "grpo": ({"clip_range": 0.2, "noise_level": 0.7}, 3e-3),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU configuration (the defaults)")
    p.add_argument("--steps", type=int, default=12, help="training steps per trainer")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--sample-steps", type=int, default=6)
    p.add_argument("--eval-seeds", type=int, default=32)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--base-steps", type=int, default=300, help="training steps of the tiny flow base model")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    from rewarddance.backend.generators.tiny_flow import train_tiny_flow
    from rewarddance.backend.rl.config import RLConfig
    from rewarddance.backend.rl.run import train_rl

    args = parse_args(argv)
    started = time.perf_counter()
    base = train_tiny_flow(steps=args.base_steps, seed=args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="rl_bench_"))
    save_file({k: v.contiguous() for k, v in base.net.state_dict().items()}, str(tmp / "base.safetensors"))
    print(
        f"tiny flow base model fitted in {time.perf_counter() - started:.1f} s; {args.steps} steps x 2 prompts x "
        f"group {args.group_size}; {args.sample_steps} sampling steps; LoRA rank {args.rank}; "
        f"held-out: {args.eval_seeds} unseen seeds, ODE"
    )
    gains = {}
    print(
        f"{'trainer':8} {'before':>8} {'after':>8} {'gain':>8} {'max win std':>12} {'final win std':>14} {'steps/s':>8}"
    )
    for name, (extra, lr) in SETTINGS.items():
        trainer = {"group_size": args.group_size, "sample_steps": args.sample_steps, **extra}
        cfg = RLConfig(
            algorithm=name,
            out=str(tmp / name),
            prompts=["a red picture", "a red object"],
            steps=args.steps,
            learning_rate=lr,
            lora_rank=args.rank,
            lora_alpha=2.0 * args.rank,
            eval_seeds=args.eval_seeds,
            save_every=0,
            seed=args.seed,
            generator={"kind": "tiny", "path": str(tmp / "base.safetensors")},
            trainer=trainer,
        )
        s = train_rl(cfg)
        gains[name] = s["relative_gain"]
        print(
            f"{name:8} {s['reward_before']:8.4f} {s['reward_after']:8.4f} {s['relative_gain']:+8.2%} "
            f"{s['max_window_std']:12.4f} {s['final_window_std']:14.4f} {s['steps_per_second']:8.2f}"
        )
    print(f"total {time.perf_counter() - started:.1f} s")
    print(f"min_gain={min(gains.values()):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
