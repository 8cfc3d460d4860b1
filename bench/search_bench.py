"""Noise search: every algorithm at the same budget vs the first sample and vs best-of-N, over many seeds.

Generator: the tiny pixel-space flow model (`backend/generators/tiny_flow.py`), trained here for a few
seconds on crops of scikit-image's sample photos. Reward: a visible, differentiable preference (how much
redder than green/blue an image is), so every algorithm, including the gradient one, can use it; pass
`--reward vlm` to score with a tiny Qwen2.5-VL instead (slower; gradient search then goes through the
VLM's differentiable preprocessing).

Printed per algorithm: mean reward, gain over the first sample (relative), gain vs best-of-N, reward gain
per 100 denoiser calls, and the search machinery's own overhead (time outside the denoiser, the scorer
and, for the gradient search, the backward pass through them) as a share of the total. The last line is `min_gain=<smallest relative gain over the first sample>`.

    python bench/search_bench.py --quick           # CPU, under a minute
    python bench/search_bench.py --seeds 64 --budget 256 --steps 16
"""

from __future__ import annotations

import argparse
import statistics
import time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU configuration (the defaults)")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="sampling steps per image")
    p.add_argument("--budget", type=int, default=128, help="denoiser calls per search")
    p.add_argument("--train-steps", type=int, default=300, help="training steps of the tiny flow model")
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--reward", default="colour", choices=["colour", "vlm"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from rewarddance.backend.generators.protocol import seeded_noise
    from rewarddance.backend.generators.sampling import sample
    from rewarddance.backend.generators.tiny_flow import train_tiny_flow
    from rewarddance.backend.rewards import ColourReward, ModelReward
    from rewarddance.backend.search.algorithms import ALGORITHMS

    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    gen = train_tiny_flow(steps=args.train_steps, size=args.size)
    print(
        f"tiny flow generator trained in {time.perf_counter() - started:.1f} s ({args.train_steps} steps, "
        f"{args.size}x{args.size} RGB); {args.steps} sampling steps; budget {args.budget} denoiser calls; "
        f"{args.seeds} seeds; reward: {args.reward}"
    )
    if args.reward == "vlm":
        import tempfile

        from rewarddance.backend import RewardModel
        from rewarddance.backend.vlm.tiny import write_tiny_checkpoint

        tmp = tempfile.mkdtemp()
        rm = RewardModel.from_pretrained(
            str(write_tiny_checkpoint("qwen2_5_vl", f"{tmp}/rm")), dtype="fp32", device="cpu"
        )
        reward = ModelReward(rm, "a red image")
    else:
        reward = ColourReward(channel=0)
    with torch.no_grad():
        first = [
            float(reward(gen.decode(sample(gen, seeded_noise(gen, 1, s), args.steps)))[0]) for s in range(args.seeds)
        ]
    mean_first = statistics.mean(first)
    rows = {}
    for name, fn in ALGORITHMS.items():
        scores, calls, overhead, total = [], [], 0.0, 0.0
        for seed in range(args.seeds):
            result = fn(gen, reward, args.steps, args.budget, seed=seed)
            scores.append(result.score)
            calls.append(result.denoiser_calls)
            sec = result.seconds
            overhead += max(0.0, sec["total"] - sec["denoiser"] - sec["scorer"] - sec.get("backward", 0.0))
            total += sec["total"]
        rows[name] = (statistics.mean(scores), statistics.mean(calls), overhead / total if total else 0.0, total)
    bon = rows["best_of_n"][0]
    print(f"first sample: mean reward {mean_first:.4f}")
    print(
        f"{'algorithm':>18} {'reward':>8} {'vs first':>9} {'vs best-of-N':>13} {'gain/100 calls':>15} "
        f"{'calls':>6} {'overhead':>9} {'time s':>7}"
    )
    gains = {}
    for name, (mean, mean_calls, overhead, total) in rows.items():
        gains[name] = (mean - mean_first) / abs(mean_first)
        print(
            f"{name:>18} {mean:>8.4f} {gains[name]:>+9.1%} {(mean - bon) / abs(bon):>+13.1%} "
            f"{100 * (mean - mean_first) / mean_calls:>15.4f} {mean_calls:>6.0f} {overhead:>9.1%} {total:>7.2f}"
        )
    worst = max(r[2] for r in rows.values())
    print(f"max machinery overhead: {worst:.1%} of search time")
    print(f"min_gain={min(gains.values()):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
