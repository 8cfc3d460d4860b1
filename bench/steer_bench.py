"""Does a trained judge steer? A gold-vs-proxy loop, end to end from nothing, on the real code paths.

1. Generator: the tiny pixel-space flow model, fitted here to crops of scikit-image's sample photos.
2. Gold judges: visible pixel properties (`--gold`; backend/rewards/statistics.py) play the hidden human
   taste, one study each. Each labels pairs of generator samples (pairs closer than `--margin` x the gold std
   are ties and dropped). The defaults: warmth (a taste the labelled samples show in full) and warm_natural
   (warmth, but blown-out colour is disliked: the samples almost never blow out, so the labels barely show
   that half of the taste; over-optimisation is expected there).
3. Proxy reward models: tiny Qwen2.5-VL checkpoints of three sizes (`--sizes`), fine-tuned with the project's
   reward-model trainer on those pairs, pointwise and pairwise. Each is scored against the gold judge on
   fresh samples it never saw (held-out pairwise accuracy of the kind of judgement it was trained for).
4. Steering at equal budget with the proxy RMs: every noise-search algorithm (tree search included) and the
   early-pruned variants of best-of-N and random search (SEARCH_VARIANTS), and every RL trainer (raft,
   refl, grpo, nft; grpo's sliding window and branching, `GRPO_VARIANTS`, at grpo's steps: see their wall time),
   plus the paper's pairwise recipe (grpo rewarded by P(beats the frozen model's best-of-N
   tournament winner)), Pref-GRPO (grpo rewarded by each image's win rate within its group) and two
   ensembles of the pointwise RMs (mean and worst case). Search is measured on held-out seeds against each
   seed's first sample; RL on held-out seeds before vs after, with the held-out proxy, gold and KL to the frozen
   model every `--eval-every` steps, and the windowed reward std (the collapse warning) from the trainer.
5. Reward hacking: for each RL run the held-out step where gold peaked and the step where the collapse
   warning fired; per RM size, gold gain, gold peak and final reward std; a chart of proxy and gold against
   steps, gold against sqrt(KL) and the windowed reward std (`--chart`).

The proxy gain is judged by the reward that was optimised; the gold gain by the judge nobody optimised. The
last lines are `gold_gain_min[<gold>]=...` per gold judge, then `gold_gain_min=<smallest relative gold gain
over the first sample across every search algorithm and trainer with the default RM (pointwise, size s),
for the first gold judge>`. Charts: `overoptimisation_<gold>.png` in `--chart` (default `--out`).

    python bench/steer_bench.py --quick        # 2-core CPU: about 6 minutes (two gold judges)
    python bench/steer_bench.py --gold warmth,warm_natural,centre_brightness,symmetry   # the full run of RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "a photo"  # the tiny generator is unconditional; the reward models are trained for this prompt
SEARCH_SEED_BASE = 5000  # held-out search seeds (the RM's training samples come from seeds 0 and 1)
SEARCH_VARIANTS = {  # rows beside ALGORITHMS at the same budget: name -> (algorithm, its keywords)
    "best_of_n_pruned": ("best_of_n", {"prune_at": 0.25, "keep_fraction": 0.25}),
    "random_search_pruned": ("random_search", {"prune_at": 0.25, "keep_fraction": 0.25}),
}
TRAINERS = {  # per trainer: its knobs and learning rate (the rest is shared), as in bench/rl_bench.py
    "raft": ({"raft_updates": 4}, 1e-3),
    "refl": ({"grad_steps": 2}, 3e-3),
    "grpo": ({"clip_range": 0.2, "noise_level": 0.7}, 3e-3),
    "nft": ({"nft_timesteps": 3, "minibatches": 2}, 3e-3),
}
NFT_LONG = 3  # nft is also run for this many times --rl-steps (time_to_grpo_gold: does it reach grpo's gain sooner?)
GRPO_VARIANTS = {  # grpo options run beside grpo with the default RM (grpo's knobs and learning rate, plus these)
    # MixGRPO: SDE on 2 of 8 steps (ODE elsewhere), the window one step later every 4 training steps
    "grpo_sliding": {"window": 2, "window_mode": "sliding", "window_shift_every": 4, "window_stride": 1},
    # TempFlow-GRPO-style branching: 2 members x 4 SDE branches at step 1 (grpo's 8 images a prompt), step 1 trained
    "grpo_branch": {"group_size": 2, "branch_at": 1, "branches": 4},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU configuration: fewer samples, seeds and steps")
    p.add_argument(
        "--gold",
        default="warmth,warm_natural",
        help="gold judges, comma separated (warmth, warm_natural, centre_brightness, symmetry); the first is the "
        "default one gold_gain_min reports",
    )
    p.add_argument("--sizes", default="xs,s,m", help="tiny RM sizes (comma separated); the default RM is 's'")
    p.add_argument("--samples", type=int, default=None, help="generator samples labelled for RM training")
    p.add_argument("--margin", type=float, default=0.3, help="gold differences under margin x gold std are ties")
    p.add_argument("--rm-steps", type=int, default=None, help="reward-model training steps")
    p.add_argument("--search-seeds", type=int, default=None)
    p.add_argument("--budget", type=int, default=64, help="denoiser calls per search")
    p.add_argument("--steps", type=int, default=8, help="sampling steps per image")
    p.add_argument("--rl-steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-seeds", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="keep every file here (default: a temporary directory)")
    p.add_argument(
        "--chart", default=None, help="the over-optimisation chart PNG (default: <out>/overoptimisation.png)"
    )
    args = p.parse_args(argv)
    quick = {"samples": 1200, "rm_steps": 300, "search_seeds": 16, "rl_steps": 20, "eval_every": 2, "eval_seeds": 16}
    full = {"samples": 3000, "rm_steps": 600, "search_seeds": 32, "rl_steps": 40, "eval_every": 4, "eval_seeds": 32}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.gold = [g.strip() for g in args.gold.split(",") if g.strip()]
    if "s" not in args.sizes:
        p.error("--sizes must include 's' (the default RM)")
    return args


class Clock:
    """Seconds per stage, printed as each ends."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        print(f"[{now - self.started:6.0f} s] {what} ({now - self.last:.0f} s)", flush=True)
        self.last = now


# --- 1-2: generator, gold-labelled pairs -----------------------------------------------------------------------
def samples(gen: Any, n: int, seed: int, steps: int) -> Any:
    """n decoded ODE samples [n, H, W, 3] from one seed."""
    import torch

    from rewarddance.backend.generators.protocol import seeded_noise
    from rewarddance.backend.generators.sampling import sample

    with torch.no_grad():
        return torch.cat(
            [gen.decode(sample(gen, seeded_noise(gen, min(256, n - i), seed + i), steps)) for i in range(0, n, 256)]
        )


def gold_pairs(images: Any, gold: Any, folder: Path, margin: float, seed: int) -> tuple[Path, dict]:
    """Save images as PNG, score them with the gold judge and write pairs with `make-pairs`' library (a seeded
    disjoint pairing; the gold-better image chosen; differences under margin x the gold std are ties, dropped)."""
    import numpy as np
    from PIL import Image

    from rewarddance.backend.training.data import write_pairs
    from rewarddance.backend.training.labelling import pairs_from_scores, relative_to

    (folder / "images").mkdir(parents=True, exist_ok=True)
    files = []
    for idx, image in enumerate(images):
        files.append(str(folder / "images" / f"{idx:05d}.png"))
        Image.fromarray((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(files[-1])
    scores = gold(images).tolist()
    labelled = pairs_from_scores(files, [PROMPT] * len(files), scores, margin * statistics.pstdev(scores), seed=seed)
    kept = [p for p in labelled if not p.tie]
    path = write_pairs(relative_to(kept, folder / "pairs.jsonl"), folder / "pairs.jsonl")
    return path, {"images": len(files), "pairs": len(kept), "ties_dropped": len(labelled) - len(kept)}


# --- 3: proxy reward models ------------------------------------------------------------------------------------
def train_proxy(root: Path, size: str, objective: str, pairs: Path, steps: int, seed: int) -> Path:
    """A tiny Qwen2.5-VL of `size` fine-tuned on the gold pairs with `objective`; the trained checkpoint."""
    from rewarddance.backend.training.trainer import RMTrainConfig, train_reward_model
    from rewarddance.backend.vlm.tiny import write_tiny_checkpoint

    base = write_tiny_checkpoint("qwen2_5_vl", root / f"base_{size}", seed=seed, size=size)
    cfg = RMTrainConfig(
        model=str(base),
        pairs=str(pairs),
        out=str(root / f"rm_{size}_{objective}"),
        objective=objective,
        lora=False,
        freeze_vision=False,
        learning_rate=3e-4,
        steps=steps,
        batch_size=8,
        save_every=0,
        eval_fraction=0.1,
        dtype="fp32",
        device="cpu",
        seed=seed,
    )
    return Path(train_reward_model(cfg)["model"])


# --- 4: steering ---------------------------------------------------------------------------------------------------
def search_row(gen: Any, reward: Any, gold: Any, method: str, args: argparse.Namespace) -> dict:
    """Mean proxy and gold of each held-out seed's first sample and of the search's pick (`method`: an algorithm
    or a SEARCH_VARIANTS name)."""
    from rewarddance.backend.search.algorithms import ALGORITHMS

    algorithm, options = SEARCH_VARIANTS.get(method, (method, {}))

    first_proxy, first_gold, best_proxy, best_gold, seconds = [], [], [], [], 0.0
    for k in range(args.search_seeds):
        seed = SEARCH_SEED_BASE + k
        first = samples(gen, 1, seed, args.steps)
        first_proxy.append(float(reward(first)[0]))
        first_gold.append(float(gold(first)[0]))
        result = ALGORITHMS[algorithm](gen, reward, args.steps, args.budget, seed=seed, **options)
        best_proxy.append(result.score)
        best_gold.append(float(gold(result.image)[0]))
        seconds += result.seconds["total"]
    return gains(
        statistics.mean(first_proxy),
        statistics.mean(best_proxy),
        statistics.mean(first_gold),
        statistics.mean(best_gold),
    ) | {"seconds": seconds}


def gains(proxy_before: float, proxy_after: float, gold_before: float, gold_after: float) -> dict:
    """Before/after values and relative gains of proxy and gold."""
    return {
        "proxy_before": proxy_before,
        "proxy_after": proxy_after,
        "proxy_gain": (proxy_after - proxy_before) / abs(proxy_before) if proxy_before else float("nan"),
        "gold_before": gold_before,
        "gold_after": gold_after,
        "gold_gain": (gold_after - gold_before) / abs(gold_before),
    }


def rl_run(
    name: str,
    root: Path,
    base: Path,
    args: argparse.Namespace,
    gold: str,
    algorithm: str,
    rewards: list[dict],
    monitors: list[dict],
    trainer_knobs: dict | None = None,
    steps: int | None = None,
    **extra: Any,
) -> dict:
    """One RL run with held-out gold (and proxy) monitors (`trainer_knobs` on top of the algorithm's; `steps`
    instead of --rl-steps); its summary and curves."""
    from rewarddance.backend.rl.config import RLConfig
    from rewarddance.backend.run_log import read_rows
    from rewarddance.backend.runs import run_task

    knobs, lr = TRAINERS[algorithm]
    steps = steps or args.rl_steps
    cfg = RLConfig(
        algorithm=algorithm,
        out=str(root / "rl" / name),
        prompts=[PROMPT],
        steps=steps,
        learning_rate=lr,
        lora_rank=4,
        lora_alpha=8.0,
        prompts_per_step=2,
        eval_seeds=args.eval_seeds,
        eval_every=args.eval_every,
        save_every=0,
        std_window=4,
        seed=args.seed,
        generator=str(base),
        rewards=rewards,
        monitors=monitors,
        trainer={"group_size": 8, "sample_steps": args.steps, **knobs, **(trainer_knobs or {})},
        **extra,
    )
    started = time.perf_counter()
    task = timed_task(cfg)
    summary = run_task(task, task.optimizer())
    rows = read_rows(Path(cfg.out) / "log.jsonl")
    curve = [(0, summary["held_out_before"])] + [(r["step"], r["held_out"]) for r in rows if "held_out" in r]
    curve.append((steps, summary["held_out_after"]))
    proxy = "proxy" if any(m.get("label") == "proxy" for m in monitors) else "reward"
    before, after = summary["held_out_before"], summary["held_out_after"]
    golds = [h[gold] for _, h in curve]
    peak = curve[golds.index(max(golds))][0]
    warned = summary.get("collapse_warning_step")
    stds = [r["window_std"] for r in rows if "window_std" in r]
    return gains(before[proxy], after[proxy], before[gold], after[gold]) | {
        "kl": after.get("kl", float("nan")),
        "final_std": stds[-1] if stds else float("nan"),
        "first_std": stds[min(len(stds) - 1, 3)] if stds else float("nan"),
        "gold_peak_step": peak,
        "gold_peak": max(golds),
        "warning_step": warned,
        "warned_before_peak": warned is not None and warned <= peak,
        "curve": [(step, h[proxy], h[gold], h.get("kl", float("nan"))) for step, h in curve],
        "std_curve": [(r["step"], r["window_std"]) for r in rows if "window_std" in r],
        "seconds": time.perf_counter() - started,
        "train_seconds": sum(train_seconds(r) for r in rows),
        "gold_time_curve": [
            (sum(train_seconds(r) for r in rows if r["step"] <= step), relative(before[gold], h[gold]))
            for step, h in curve
        ],
    }


def timed_task(cfg: Any) -> Any:
    """The RL task of `cfg`, its held-out evaluations timed (`eval_seconds`), so training time can leave them out."""
    from rewarddance.backend.rl.run import RLTask

    class TimedRLTask(RLTask):
        def evaluate(self) -> dict[str, float]:
            started = time.perf_counter()
            held_out = super().evaluate()
            return held_out | {"eval_seconds": time.perf_counter() - started}

    return TimedRLTask(cfg)


def train_seconds(row: dict) -> float:
    """A logged step's wall time without its held-out evaluation."""
    return row["seconds"] - row.get("held_out", {}).get("eval_seconds", 0.0)


def relative(before: float, after: float) -> float:
    """(after - before) / |before|."""
    return (after - before) / abs(before)


def add_time_to_grpo_gold(rl: dict[tuple[str, str], dict]) -> None:
    """Per RL row, the training wall time (held-out evaluations left out) at which its held-out gold gain first
    reached the final gold gain of grpo with the same reward (or with the default RM); None if it never did."""
    default = rl.get(("pointwise s", "grpo"))
    for (label, _), r in rl.items():
        grpo = rl.get((label, "grpo"), default)
        if grpo is None:
            r["time_to_grpo_gold"] = None
            continue
        target = grpo["gold_gain"]
        r["time_to_grpo_gold"] = next((t for t, gain in r["gold_time_curve"] if gain >= target), None)


# --- 5: the chart -----------------------------------------------------------------------------------------------
def write_chart(rl: dict[tuple[str, str], dict], path: Path, gold_name: str) -> Path:
    """Proxy and gold against steps for the default RM's trainers; gold against steps for grpo with each reward;
    gold against sqrt(KL to the frozen model) for all of them."""
    from rewarddance.backend.charts import line_panels

    def series(runs: dict, column: int, x: str = "step") -> dict:
        return {
            name: [(math.sqrt(max(c[3], 0.0)) if x == "kl" else c[0], c[column]) for c in r["curve"] if c[3] == c[3]]
            for name, r in runs.items()
        }

    default = {method: r for (label, method), r in rl.items() if label == "pointwise s"}
    grpo = {label: r for (label, method), r in rl.items() if method == "grpo"}
    panels = [
        ("default RM (pointwise s): held-out proxy reward, what was optimised", series(default, 1)),
        (f"default RM: held-out gold judge ({gold_name}), never optimised", series(default, 2)),
        (f"grpo with each reward: held-out gold ({gold_name})", series(grpo, 2)),
        ("grpo with each reward: held-out proxy (its own reward)", series(grpo, 1)),
        (
            "gold vs sqrt(KL to the frozen model), every run",
            series({k: v for k, v in default.items() if k != "grpo"} | grpo, 2, "kl"),
            "sqrt KL",
        ),
        (
            "windowed reward std of the training reward (RewardDance's collapse signal), every run",
            {name: r["std_curve"] for name, r in ({k: v for k, v in default.items() if k != "grpo"} | grpo).items()},
        ),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    line_panels(panels, width=1000, panel_height=210).save(path)
    return path


def proxy_models(root: Path, gen: Any, gold: Any, args: argparse.Namespace, clock: Clock) -> tuple[dict, dict]:
    """Label samples with the gold judge, train the proxy RMs, measure each on fresh pairs; (paths, accuracy)."""
    from rewarddance.backend.reward_model import RewardModel
    from rewarddance.backend.training.data import load_pairs
    from rewarddance.backend.training.evaluation import evaluate_pairs

    samples_ = samples(gen, args.samples, args.seed, args.steps)
    train_pairs, labels = gold_pairs(samples_, gold, root / "data", args.margin, args.seed)
    fresh_pairs, fresh = gold_pairs(samples(gen, 400, 777_000, args.steps), gold, root / "fresh", args.margin, 1)
    print(
        f"gold judge {gold.name}: {labels['images']} samples -> {labels['pairs']} training pairs "
        f"({labels['ties_dropped']} ties dropped); {fresh['pairs']} fresh held-out pairs"
    )
    trained, accuracy = {}, {}
    for size in args.sizes:
        for objective in ("pointwise", "pairwise") if size == "s" or not args.quick else ("pointwise",):
            trained[(size, objective)] = train_proxy(root, size, objective, train_pairs, args.rm_steps, args.seed)
            clock.lap(f"proxy RM {size}/{objective} trained ({args.rm_steps} steps)")
    print("\nproxy RMs vs the gold judge on fresh samples (held-out accuracy of the judgement each was trained for)")
    print(f"{'size':>5} {'objective':>10} {'params':>9} {'accuracy':>9} {'score std':>10}")
    for (size, objective), path in trained.items():
        rm = RewardModel.from_pretrained(str(path), dtype="fp32", device="cpu")
        m = evaluate_pairs(rm, load_pairs(fresh_pairs))
        params = sum(p.numel() for p in rm.vlm.model.parameters())
        accuracy[(size, objective)] = {
            "accuracy": m[f"{objective}_accuracy"],
            "score_std": m["score_std"],
            "params": params,
        }
        print(f"{size:>5} {objective:>10} {params:>9,} {m[f'{objective}_accuracy']:>9.3f} {m['score_std']:>10.3f}")
    clock.lap("RM accuracy measured")
    return trained, accuracy


def search_study(gen: Any, gold: Any, trained: dict, args: argparse.Namespace, clock: Clock) -> dict:
    """Every algorithm and variant with the default RM; best-of-N (quick) or all of them (full) with the others."""
    from rewarddance.backend.reward_model import RewardModel
    from rewarddance.backend.rewards import ModelReward
    from rewarddance.backend.search.algorithms import ALGORITHMS

    load = lambda key: RewardModel.from_pretrained(str(trained[key]), dtype="fp32", device="cpu")  # noqa: E731
    pairwise = load(("s", "pairwise"))
    candidates = samples(gen, 8, 2_000_000, args.steps)
    reference = candidates[pairwise.tournament(candidates, PROMPT).ranking[0]][None]
    rewards = {"pointwise s": ModelReward(load(("s", "pointwise")), PROMPT)}
    rewards["pairwise s (vs tournament ref)"] = ModelReward(pairwise, PROMPT, reference=reference)
    for size in args.sizes:
        if size != "s":
            rewards[f"pointwise {size}"] = ModelReward(load((size, "pointwise")), PROMPT)
    rows = {}
    for label, reward in rewards.items():
        methods = [*ALGORITHMS, *SEARCH_VARIANTS]
        for method in methods if label == "pointwise s" or not args.quick else ["best_of_n"]:
            rows[(label, method)] = search_row(gen, reward, gold, method, args)
        clock.lap(f"search with {label}")
    return rows


def rl_study(root: Path, base: Path, gold: Any, trained: dict, args: argparse.Namespace, clock: Clock) -> dict:
    """raft, refl and grpo with the default RM (and every size), grpo's variants, the pairwise recipe, Pref-GRPO,
    ensembles."""
    monitor = [{"kind": "statistic", "name": gold.name}]
    spec = {size: {"kind": "pointwise", "model": str(trained[(size, "pointwise")])} for size in args.sizes}
    pair_spec = {"kind": "pairwise", "model": str(trained[("s", "pairwise")])}
    runs = {}
    for size in args.sizes:
        for algorithm in TRAINERS if size == "s" or not args.quick else ["grpo"]:
            runs[(f"pointwise {size}", algorithm)] = rl_run(
                f"{algorithm}_{size}", root, base, args, gold.name, algorithm, [spec[size]], monitor
            )
            clock.lap(f"RL {algorithm} with pointwise {size}")
    for variant, knobs in GRPO_VARIANTS.items():  # at grpo's rl_steps: the wall time column shows the cost
        runs[("pointwise s", variant)] = rl_run(
            f"{variant}_s", root, base, args, gold.name, "grpo", [spec["s"]], monitor, trainer_knobs=knobs
        )
        clock.lap(f"RL {variant} with pointwise s")
    # nft's steps cost a fraction of grpo's (no SDE, no per-step log-probs): at equal wall time it takes more of them
    runs[("pointwise s", f"nft x{NFT_LONG}")] = rl_run(
        "nft_long_s", root, base, args, gold.name, "nft", [spec["s"]], monitor, steps=NFT_LONG * args.rl_steps
    )
    clock.lap(f"RL nft with pointwise s, {NFT_LONG}x the steps")
    runs[("pairwise s (vs tournament ref)", "grpo")] = rl_run(
        "grpo_pairwise", root, base, args, gold.name, "grpo", [pair_spec], monitor
    )
    group_spec = {"kind": "pairwise_group", "model": str(trained[("s", "pairwise")])}
    runs[("Pref-GRPO (group win rate)", "grpo")] = rl_run(
        "pref_grpo", root, base, args, gold.name, "grpo", [group_spec], monitor + [dict(pair_spec, label="proxy")]
    )
    clock.lap("RL with the pairwise recipe and Pref-GRPO")
    members, n = [spec[size] for size in args.sizes], len(args.sizes)
    if n > 1:
        runs[("ensemble mean", "grpo")] = rl_run(
            "grpo_mean", root, base, args, gold.name, "grpo", members, monitor, reward_weights=[1 / n] * n
        )
        runs[("ensemble min", "grpo")] = rl_run(
            "grpo_min", root, base, args, gold.name, "grpo", members, monitor, reward_combine="min"
        )
        clock.lap("RL grpo with ensembles")
    return runs


def print_tables(gold: str, search: dict, rl: dict, accuracy: dict, args: argparse.Namespace) -> None:
    """The steering table (search and RL) and the RM-size table."""
    print(
        f"\nsteering at equal budget; gold judge: {gold}; gains relative to the first sample (search, "
        f"{args.search_seeds} held-out seeds, budget {args.budget} denoiser calls) or to the model before training "
        f"(RL, {args.rl_steps} steps, {args.eval_seeds} held-out seeds)"
    )
    print(
        f"{'reward':>31} {'method':>20} {'proxy':>15} {'proxy gain':>10} {'gold':>15} {'gold gain':>9} "
        f"{'final std':>9} {'KL':>7} {'gold peak':>9} {'warned':>6} {'train s':>8} {'t_grpo_gold':>11}"
    )
    for (label, method), r in list(search.items()) + list(rl.items()):
        extra = ""
        if "curve" in r:
            reached = r.get("time_to_grpo_gold")
            extra = (
                f"{r['final_std']:>9.4f} {r['kl']:>7.4f} {r['gold_peak_step']:>9} {str(r['warning_step']):>6} "
                f"{r['train_seconds']:>8.1f} {'never' if reached is None else f'{reached:.1f}':>11}"
            )
        print(
            f"{label:>31} {method:>20} {r['proxy_before']:>6.3f}->{r['proxy_after']:<7.3f} {r['proxy_gain']:>+10.1%} "
            f"{r['gold_before']:>6.3f}->{r['gold_after']:<7.3f} {r['gold_gain']:>+9.1%} {extra}"
        )
    grpo = rl.get(("pointwise s", "grpo"))
    for method in ("nft", f"nft x{NFT_LONG}"):
        nft = rl.get(("pointwise s", method))
        if grpo and nft:
            reached = nft["time_to_grpo_gold"]
            print(
                f"{method} vs grpo (default RM): grpo's final gold gain {grpo['gold_gain']:+.1%} after "
                f"{grpo['train_seconds']:.1f} s of training; {method}'s final {nft['gold_gain']:+.1%} after "
                f"{nft['train_seconds']:.1f} s; it reached grpo's gain "
                + (
                    f"at {reached:.1f} s ({reached / grpo['train_seconds']:.2f} of grpo's time)"
                    if reached is not None
                    else "never in this run"
                )
            )
    print(f"\nRM size vs hacking (gold {gold}; peak: the held-out step where gold was highest)")
    print(
        f"{'size':>5} {'params':>9} {'accuracy':>9} {'trainer':>12} {'gold gain':>10} {'gold peak (step)':>17} "
        f"{'gold after':>10} {'final std':>10} {'warned':>6}"
    )
    for size in args.sizes:
        for (label, method), r in rl.items():
            if label == f"pointwise {size}":
                a = accuracy[(size, "pointwise")]
                print(
                    f"{size:>5} {a['params']:>9,} {a['accuracy']:>9.3f} {method:>12} {r['gold_gain']:>+10.1%} "
                    f"{r['gold_peak']:>10.3f} ({r['gold_peak_step']:>3}) {r['gold_after']:>10.3f} "
                    f"{r['final_std']:>10.4f} {str(r['warning_step']):>6}"
                )


def study(gold_name: str, root: Path, gen: Any, base: Path, args: argparse.Namespace, clock: Clock) -> float:
    """Stages 2-5 for one gold judge; returns its smallest relative gold gain with the default RM."""
    from rewarddance.backend.rewards import ImageStatistic

    gold = ImageStatistic(gold_name)
    print(f"\n===== gold judge: {gold_name} =====")
    trained, accuracy = proxy_models(root, gen, gold, args, clock)
    search = search_study(gen, gold, trained, args, clock)
    rl = rl_study(root, base, gold, trained, args, clock)
    add_time_to_grpo_gold(rl)
    print_tables(gold_name, search, rl, accuracy, args)
    chart = write_chart(rl, Path(args.chart or root.parent) / f"overoptimisation_{gold_name}.png", gold_name)
    results = {
        "gold": gold_name,
        "accuracy": {f"{s}/{o}": v for (s, o), v in accuracy.items()},
        "search": {f"{label} / {m}": r for (label, m), r in search.items()},
        "rl": {f"{label} / {m}": r for (label, m), r in rl.items()},
    }
    (root / "results.json").write_text(json.dumps(results, indent=1))
    print(f"chart: {chart}; results: {root / 'results.json'}")
    default = [r for (label, _), r in list(search.items()) + list(rl.items()) if label == "pointwise s"]
    return min(r["gold_gain"] for r in default)


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers.utils import logging

    from rewarddance.backend.generators.tiny_checkpoint import save_tiny_generator
    from rewarddance.backend.generators.tiny_flow import train_tiny_flow

    args = parse_args(argv)
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    clock = Clock()
    root = Path(args.out or tempfile.mkdtemp(prefix="steer_bench_"))
    gen = train_tiny_flow(steps=300, size=16, seed=args.seed)
    base = save_tiny_generator(gen, root / "generator", train_steps=300, seed=args.seed)
    clock.lap("tiny flow generator fitted (16x16 RGB, 300 steps)")
    worst = {gold: study(gold, root / gold, gen, base, args, clock) for gold in args.gold}
    print()
    for gold, value in worst.items():
        print(f"gold_gain_min[{gold}]={value:.4f}")
    print(f"gold_gain_min={worst[args.gold[0]]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
