"""Reward-model training commands: `train-rm` (fine-tune) and `eval-rm` (measure); `make-pairs` is in pairs.py."""

from __future__ import annotations

import argparse
import json
import sys

from ..devices import DTYPE_CHOICES
from .checks import check_model_source
from .command import Command
from .training_runs import log_training_to_stderr, process_device, run_with_progress

ROW_BOOKKEEPING = ("step", "seconds", "skipped_updates")  # log-row fields the progress bar leaves out


def add_train_rm_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance train-rm`."""
    p.add_argument("--config", required=True, help="TOML or YAML training config (see README)")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--accelerate", action="store_true", help="running under `accelerate launch` (several processes)")


def cmd_train_rm(args: argparse.Namespace) -> int:
    """Train a reward model from a config file; Ctrl+C checkpoints, and the same command resumes."""
    from ..training.trainer import load_train_config, train_reward_model

    log_training_to_stderr()
    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
        cfg.validate()
    cfg.device = process_device(args.accelerate) or cfg.device  # one GPU per process
    result = run_with_progress(
        lambda progress: train_reward_model(cfg, progress),
        cfg.steps,
        "training",
        lambda row: {k: f"{v:.3f}" for k, v in row.items() if k not in ROW_BOOKKEEPING and isinstance(v, (int, float))},
        args.quiet,
    )
    if result is None:
        return 0
    if result["interrupted"]:
        print(
            f"rewarddance: interrupted at step {result['step']}; checkpoint {result['checkpoint']}. "
            "Run the same command to continue.",
            file=sys.stderr,
        )
        return 130
    summary = {k: v for k, v in result["eval"].items() if k != "reliability"}
    print(json.dumps({"model": result["model"], "step": result["step"], "eval": summary}, indent=2))
    return 0


def add_eval_rm_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `rewarddance eval-rm`."""
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--pairs", required=True, help="in-domain pairs (.jsonl or a folder of pairs)")
    p.add_argument("--ood-pairs", default=None, help="out-of-domain pairs, reported separately")
    p.add_argument("--dtype", default="auto", help=f"{', '.join(DTYPE_CHOICES)} (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print every metric as JSON")


def cmd_eval_rm(args: argparse.Namespace) -> int:
    """Pairwise / pointwise accuracy, calibration and spread on one or two (in-domain, out-of-domain) sets."""
    from ..reward_model import RewardModel
    from ..training.data import load_pairs
    from ..training.evaluation import evaluate_pairs

    check_model_source(args.model, "--model")
    sets = {"in_domain": load_pairs(args.pairs)}
    if args.ood_pairs:
        sets["out_of_domain"] = load_pairs(args.ood_pairs)
    rm = RewardModel.from_pretrained(args.model, dtype=args.dtype, device=args.device, max_pixels=args.max_pixels)
    report = {name: evaluate_pairs(rm, pairs) for name, pairs in sets.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, m in report.items():
        print_eval_report(name, m)
    return 0


def print_eval_report(name: str, m: dict) -> None:
    """Print one evaluated set's headline metrics and its reliability bins."""
    pw = "n/a" if m["pairwise_accuracy"] is None else f"{m['pairwise_accuracy']:.4f}"
    pt = "n/a" if m["pointwise_accuracy"] is None else f"{m['pointwise_accuracy']:.4f}"
    ece = "n/a" if m["ece"] is None else f"{m['ece']:.4f}"
    print(
        f"{name}: {m['pairs']} pairs ({m['ties']} ties)  pairwise accuracy {pw}  pointwise accuracy {pt}  "
        f"ECE {ece}  score mean {m['score_mean']:.4g} std {m['score_std']:.4g}"
    )
    for row in m["reliability"]:
        print(
            f"    P in {row['bin']}: {row['count']:>5} predictions, mean P {row['mean_p']:.3f}, "
            f"observed {row['frequency']:.3f}"
        )


COMMANDS = (
    Command(
        "train-rm", "fine-tune a VLM into a reward model from preference pairs", add_train_rm_arguments, cmd_train_rm
    ),
    Command("eval-rm", "evaluate a reward model on preference pairs", add_eval_rm_arguments, cmd_eval_rm),
)
