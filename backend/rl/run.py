"""One RL run: the loop, checkpoints (every `save_every` steps and on interrupt), resume after a crash,
the non-finite guard, the JSONL log and chart, the reward-collapse warning, and the exported LoRA files.

Each step's randomness comes from (seed, step) alone, so a run resumed from a checkpoint takes the same
steps it would have taken. Under `accelerate launch` each process trains on its share of the step's prompts
and the LoRA gradients are averaged across processes before every update; only the main process writes.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..charts import line_panels
from ..run_log import append_row, read_rows, truncate_after
from .config import RLConfig, build_policy
from .export import save_comfyui_lora, save_peft_adapter
from .lora import LoraSpec, load_lora_state_dict, lora_state_dict, network_family
from .trainers import Optimizing, Policy, grpo_step, held_out_reward, raft_step, refl_step

Progress = Callable[[int, int, dict], None]
EVAL_SEED_BASE = 1_000_000  # held-out seeds start here; training seeds stay far below
RESUME_MUST_MATCH = ("algorithm", "rank", "alpha", "targets", "seed")  # a checkpoint continues only the same run
CHART_PANELS = [
    ("reward", ["reward_mean", "window_std"]),
    ("loss", ["loss"]),
    ("KL / clip fraction", ["kl", "clip_frac"]),
    ("zero-std groups", ["zero_std_ratio"]),
]


def distributed() -> tuple[int, int]:
    """(rank, world size) of this process (1 process without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RLRun:
    """State of one run under `cfg.out`: optimizer, step, log, checkpoints."""

    def __init__(
        self,
        cfg: RLConfig,
        policy: Policy | None = None,
        base: Any = None,
        pretrain_data: Callable[[int], torch.Tensor] | None = None,
    ):
        self.cfg = cfg.validate()
        self.tcfg = cfg.trainer_config()
        self.out = Path(cfg.out)
        self.rank, self.world = distributed()
        if policy is None:
            policy, base = build_policy(cfg)
        self.policy, self.base = policy, base
        self.pretrain_data = pretrain_data  # clean latents for ReFL's pre-training regulariser (by seed)
        self.optimizer = torch.optim.AdamW(policy.params, lr=cfg.lr, weight_decay=0.0)
        self.step = 0
        self.rows: list[dict] = []
        self.pending_bad: str | None = None
        self.skipped = 0
        self.warned = False
        self.prompts = cfg.prompt_list()
        self.eval_prompts = cfg.prompt_list("eval_prompts")

    # --- a step cut short ------------------------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Remember the LoRA and optimizer state at the current step (an interrupted step is rolled back to it)."""
        self._snapshot = (
            self.step,
            [p.detach().clone() for p in self.policy.params],
            copy.deepcopy(self.optimizer.state_dict()),
        )

    def roll_back_unfinished_step(self) -> None:
        """After an interrupt mid-step (some of its updates applied): back to the state of the last finished step."""
        snap = getattr(self, "_snapshot", None)
        if snap is None or snap[0] != self.step:
            return
        with torch.no_grad():
            for p, saved in zip(self.policy.params, snap[1]):
                p.copy_(saved)
        self.optimizer.load_state_dict(snap[2])
        self.optimizer.zero_grad(set_to_none=True)
        self.pending_bad = None
        self.policy.network.eval()

    @property
    def main(self) -> bool:
        return self.rank == 0

    # --- gradients ------------------------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate a loss piece's gradients (a non-finite piece marks the whole update for skipping)."""
        if not torch.isfinite(loss.detach()).all():
            self.pending_bad = f"non-finite loss {float(loss.detach().float().sum())}"
            return
        loss.backward()

    def optimizer_step(self) -> bool:
        """Average gradients across processes, skip the update if anything is non-finite, else clip and step."""
        params = self.policy.params
        if self.world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world
        if self.pending_bad is None and not all(p.grad is None or torch.isfinite(p.grad).all() for p in params):
            self.pending_bad = "non-finite gradient"
        if self.pending_bad is not None:
            print(f"rewarddance train: step {self.step + 1}: {self.pending_bad}; update skipped", file=sys.stderr)
            self.skipped += 1
            self.pending_bad = None
            self.optimizer.zero_grad(set_to_none=True)
            return False
        torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    # --- one step -------------------------------------------------------------------------------------------------
    def step_prompts(self, step: int) -> list[str]:
        """This process's prompts for a step (round-robin over the prompt list, split across processes)."""
        n = self.cfg.prompts_per_step * self.world
        batch = [self.prompts[(step * n + i) % len(self.prompts)] for i in range(n)]
        return batch[self.rank :: self.world]

    def train_step(self) -> dict:
        """One training step; returns its log row."""
        started = time.perf_counter()
        self.policy.network.train()
        opt = Optimizing(self.backward, self.optimizer_step)
        prompts = self.step_prompts(self.step)
        seed = self.cfg.seed * 1_000_003 + 1000 * (self.step + 1)
        skipped_before = self.skipped
        if self.cfg.algorithm == "raft":
            metrics = raft_step(self.policy, self.tcfg, prompts, seed, opt)
        elif self.cfg.algorithm == "refl":
            metrics = refl_step(self.policy, self.tcfg, prompts, seed, opt, self.pretrain_data)
        else:
            metrics = grpo_step(self.policy, self.tcfg, prompts, seed, opt)
        self.policy.network.eval()
        self.step += 1
        row = {
            "step": self.step,
            **metrics,
            "window_std": self.window_std(metrics),
            "skipped_updates": self.skipped - skipped_before,
            "seconds": time.perf_counter() - started,
        }
        warning = self.collapse_warning(row)
        if warning:
            row["warning"] = warning
            print(f"rewarddance train: {warning}", file=sys.stderr)
        self.rows.append(row)
        self.log(row)
        return row

    def window_std(self, metrics: dict) -> float:
        """Std of all rewards in the last `std_window` steps (pooled from per-step means and stds)."""
        recent = [r for r in self.rows if "reward_mean" in r][-(self.cfg.std_window - 1) :] + [metrics]
        mean = sum(r["reward_mean"] for r in recent) / len(recent)
        second = sum(r["reward_std"] ** 2 + r["reward_mean"] ** 2 for r in recent) / len(recent)
        return math.sqrt(max(second - mean**2, 0.0))

    def collapse_warning(self, row: dict) -> str | None:
        """A warning (once) when the windowed reward std falls below `collapse_ratio` of its first full-window value."""
        full = [
            r["window_std"] for r in self.rows + [row] if r.get("step", 0) >= self.cfg.std_window and "window_std" in r
        ]
        if self.warned or len(full) < 2 or full[0] <= 0:
            return None
        if row["window_std"] < self.cfg.collapse_ratio * full[0]:
            self.warned = True
            return (
                f"step {row['step']}: the windowed reward std fell to {row['window_std']:.4g} "
                f"(from {full[0]:.4g}): the generator may be collapsing onto what the reward likes (reward hacking); "
                "check the samples, lower lr, add kl_beta or an ensemble of rewards"
            )
        return None

    # --- files ----------------------------------------------------------------------------------------------------
    def log(self, row: dict) -> None:
        if self.main:
            append_row(self.out / "log.jsonl", row)

    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    def save_checkpoint(self) -> Path | None:
        """LoRA weights, optimizer and step, written to a temp dir and swapped in (never half-written)."""
        from safetensors.torch import save_file

        if not self.main:
            return None
        final = self.checkpoint_dir()
        tmp, old = final.with_name("checkpoint.tmp"), final.with_name("checkpoint.old")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(lora_state_dict(self.policy.network), str(tmp / "lora.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(
            json.dumps(
                {"step": self.step, "skipped": self.skipped, "warned": self.warned, "config": self.cfg.to_dict()},
                indent=2,
            )
        )
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def resume(self) -> bool:
        """Continue from the checkpoint, if any; log rows after it (from a crashed run) are dropped."""
        from safetensors.torch import load_file

        ckpt = self.checkpoint_dir()
        if not ckpt.is_dir() and ckpt.with_name("checkpoint.old").is_dir():
            ckpt = ckpt.with_name("checkpoint.old")  # killed between the two renames
        if not ckpt.is_dir():
            return False
        state = json.loads((ckpt / "state.json").read_text())
        saved = {k: state["config"].get(k) for k in RESUME_MUST_MATCH}
        ours = {k: self.cfg.to_dict()[k] for k in RESUME_MUST_MATCH}
        if saved != ours:
            diff = ", ".join(f"{k}={saved[k]!r} (now {ours[k]!r})" for k in RESUME_MUST_MATCH if saved[k] != ours[k])
            raise ValueError(
                f"{ckpt}: saved by a different run ({diff}); use a new out directory / filename_prefix for a "
                "different run, or delete that directory to start over"
            )
        load_lora_state_dict(self.policy.network, load_file(str(ckpt / "lora.safetensors")))
        self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        self.step, self.skipped, self.warned = state["step"], state["skipped"], state["warned"]
        log = self.out / "log.jsonl"
        rows = (
            truncate_after(log, self.step)
            if self.main
            else [r for r in read_rows(log) if r.get("step", 0) <= self.step]
        )
        self.rows = [r for r in rows if "reward_mean" in r]
        return True

    def evaluate(self) -> float:
        steps = self.cfg.eval_steps or self.tcfg.sample_steps
        seeds = [EVAL_SEED_BASE + i for i in range(self.cfg.eval_seeds)]
        return held_out_reward(self.policy, self.eval_prompts, seeds, steps)

    def export(self) -> dict[str, str]:
        """The LoRA as a ComfyUI file (for known families) and a PEFT directory; the chart."""
        if not self.main:
            return {}
        files = {
            "peft": str(
                save_peft_adapter(
                    self.policy.network,
                    LoraSpec(self.cfg.rank, self.cfg.alpha, self.cfg.targets),
                    self.out / "lora_peft",
                )
            )
        }
        family = self.policy.family
        if family is None:
            try:
                family = network_family(self.policy.network)
            except ValueError:
                family = None
        if family is not None:
            files["comfyui"] = str(
                save_comfyui_lora(
                    self.policy.network,
                    self.out / "lora_comfyui.safetensors",
                    family,
                    {"algorithm": self.cfg.algorithm, "steps": self.step},
                )
            )
        chart = write_rl_chart(self.out / "log.jsonl", self.out / "chart.png")
        if chart:
            files["chart"] = str(chart)
        return files


def write_rl_chart(log_path: Path, out: Path) -> Path | None:
    """A PNG of reward mean and windowed std, loss, KL and clip fraction, zero-std ratio over steps."""
    rows = [r for r in read_rows(log_path) if "reward_mean" in r]
    if not rows:
        return None
    panels = [
        (title, {k: [(r["step"], float(r[k])) for r in rows if k in r] for k in keys}) for title, keys in CHART_PANELS
    ]
    panels = [(t, s) for t, s in panels if any(s.values())]
    line_panels(panels).save(out)
    return out


def train_rl(
    cfg: RLConfig,
    policy: Policy | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    pretrain_data: Callable[[int], torch.Tensor] | None = None,
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
) -> dict:
    """Train (resuming from `cfg.out`'s checkpoint), evaluate before and after, export; returns a summary.

    `should_stop()` is asked after every step; it, Ctrl+C and SIGTERM-as-KeyboardInterrupt (or any of
    `interrupts`, e.g. ComfyUI's Cancel) checkpoint the run at its last finished step, and starting it again
    continues it. The summary then has "interrupted": True.
    """
    run = RLRun(cfg, policy, pretrain_data=pretrain_data)
    resumed = run.resume()
    summary_path = run.out / "summary.json"
    if not resumed:
        before = run.evaluate()
    else:  # measured when the run first started (None if that summary is gone)
        before = json.loads(summary_path.read_text()).get("reward_before") if summary_path.is_file() else None
    if run.main:
        run.out.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps({"reward_before": before, "status": "training"}, indent=2))
    started, start_step = time.perf_counter(), run.step
    interrupted = False
    try:
        while run.step < cfg.steps:
            run.snapshot()
            row = run.train_step()
            if progress is not None:
                progress(run.step, cfg.steps, row)
            if cfg.save_every and run.step % cfg.save_every == 0:
                run.save_checkpoint()
            if should_stop is not None and should_stop():
                interrupted = run.step < cfg.steps
                break
    except interrupts:
        interrupted = True
        run.roll_back_unfinished_step()
    elapsed = time.perf_counter() - started
    if interrupted:
        run.save_checkpoint()
        return {
            "interrupted": True,
            "step": run.step,
            "resumed": resumed,
            "checkpoint": str(run.checkpoint_dir()),
            "reward_before": before,
        }
    run.save_checkpoint()
    after = run.evaluate()
    files = run.export()
    summary = {
        "status": "done",
        "algorithm": cfg.algorithm,
        "step": run.step,
        "resumed": resumed,
        "reward_before": before,
        "reward_after": after,
        "relative_gain": (after - before) / abs(before) if before else None,
        "steps_per_second": (run.step - start_step) / elapsed if elapsed > 0 else None,
        "skipped_updates": run.skipped,
        "files": files,
        "max_window_std": max((r["window_std"] for r in run.rows), default=None),
        "final_window_std": run.rows[-1]["window_std"] if run.rows else None,
    }
    if run.main:
        summary_path.write_text(json.dumps(summary, indent=2))
    return summary | {"interrupted": False}
