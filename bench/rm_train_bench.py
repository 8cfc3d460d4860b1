"""Does reward-model training learn? A tiny Qwen2.5-VL on the synthetic preference set, before vs after.

The set: crops of scikit-image's sample photos; in every pair the untouched crop is preferred over a
visibly edited copy (colour cast, heavy blur or a pasted grey block). The held-out pairs are never seen
in training. The untrained model is evaluated in the same run (about chance), then trained with the
pairwise generative objective (both orders, next-token cross-entropy on Yes/No) and evaluated again.
The last line is `heldout_accuracy=<held-out accuracy after training>`: pairwise accuracy for the pairwise
objective, pointwise accuracy (score(chosen) > score(rejected)) with `--objective pointwise`.

    python bench/rm_train_bench.py --quick          # CPU, about 2 minutes: 200 pairs, 300 steps, full fine-tuning
    python bench/rm_train_bench.py --steps 600 --pairs 400 --lora
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU configuration (the defaults)")
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    p.add_argument("--objective", default="pairwise", choices=["pairwise", "pointwise"])
    p.add_argument("--family", default="qwen2_5_vl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", default=None, help="keep the trained model here (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging

    from rewarddance.backend.reward_model import RewardModel
    from rewarddance.backend.training.data import load_pairs, split_pairs
    from rewarddance.backend.training.evaluation import evaluate_pairs
    from rewarddance.backend.training.synthetic import make_synthetic_pairs
    from rewarddance.backend.training.trainer import RMTrainConfig, train_reward_model
    from rewarddance.backend.vlm.tiny import write_tiny_checkpoint

    args = parse_args(argv)
    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        pairs_file = make_synthetic_pairs(root / "data", n=args.pairs, size=args.size, seed=args.seed)
        ckpt = write_tiny_checkpoint(args.family, root / "untrained", seed=args.seed)
        _, held_out = split_pairs(load_pairs(pairs_file), 0.2, args.seed)
        before = evaluate_pairs(RewardModel.from_pretrained(str(ckpt), dtype="fp32", device="cpu"), held_out)
        cfg = RMTrainConfig(
            model=str(ckpt),
            pairs=str(pairs_file),
            out=str(root / "run"),
            objective=args.objective,
            lora=args.lora,
            lora_rank=16,
            lora_alpha=32,
            freeze_vision=args.lora,
            learning_rate=args.lr,
            steps=args.steps,
            batch_size=args.batch_size,
            save_every=0,
            eval_fraction=0.2,
            dtype="fp32",
            device="cpu",
            seed=args.seed,
        )
        started = time.perf_counter()
        result = train_reward_model(cfg)
        seconds = time.perf_counter() - started
        after = result["eval"]
        print(
            f"synthetic set: {args.pairs} pairs ({result['train_pairs']} train / {result['eval_pairs']} held out), "
            f"{args.size}px, edits colour cast / blur / pasted block; model: tiny {args.family}, "
            f"{'LoRA' if args.lora else 'full'} fine-tuning, {args.objective}, {args.steps} steps x {args.batch_size} pairs"
        )
        print(f"training time: {seconds:.1f} s (including the final export and evaluation)")
        for name, m in (("before training", before), ("after training", after)):
            print(
                f"{name:>16}: pairwise accuracy {m['pairwise_accuracy']:.4f}  pointwise accuracy "
                f"{m['pointwise_accuracy']:.4f}  ECE {m['ece']:.4f}  score std {m['score_std']:.3g}"
            )
        print("trained model:", result["model"] if args.keep else "(temporary; pass --keep DIR to keep it)")
        key = f"{args.objective}_accuracy"  # the accuracy of the kind of judgement the model was trained for
        print(json.dumps({"metric": key, "before": before[key], "after": after[key]}))
        print(f"heldout_accuracy={after[key]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
