"""One RL run on the shared run runtime (`backend/runs.py`): the RL step (raft, refl, grpo or nft on this process's
prompts), the held-out reward before and after, the reward-collapse warning, the chart and the exported LoRA files.

Each step's randomness comes from (seed, step) alone, so a run resumed from a checkpoint takes the same
steps it would have taken. Under `accelerate launch` each process trains on its share of the step's prompts;
the runtime averages the LoRA gradients across processes and only the main process writes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..runs import Progress, Run, RunTask, distributed, run_task, write_chart
from .config import RENAMED_KEYS, RLConfig, build_monitors, build_policy, frozen_generators
from .evaluation import held_out_metrics
from .export import save_comfyui_lora, save_peft_adapter
from .lora import LoraSpec, network_family
from .nft import OldPolicy, nft_step
from .trainers import Optimizing, Policy, grpo_step, raft_step, refl_step

__all__ = ["RLTask", "distributed", "train_rl", "write_rl_chart"]

log = logging.getLogger("rewarddance.train")
EVAL_SEED_BASE = 1_000_000  # held-out seeds start here; training seeds stay far below
RESUME_MUST_MATCH = ("algorithm", "lora_rank", "lora_alpha", "lora_targets", "seed")  # what defines the run
CHART_PANELS = [
    ("reward", ["reward_mean", "window_std"]),
    ("loss", ["loss"]),
    ("KL / clip fraction", ["kl", "clip_frac"]),
    ("zero-std groups", ["zero_std_ratio"]),
]
OLD_POLICY_PREFIX = "nft_old."  # checkpoint names of nft's EMA old-policy tensors
KL_NOISE_LEVEL = 0.7  # the SDE noise level of the held-out KL when the trainer's own is 0 (or not an SDE trainer)


class RLTask(RunTask):
    """An RL run under `cfg.out`: the policy (generator + LoRA + rewards) and the RL step."""

    snapshot_each_step = True  # raft and grpo apply several updates per step: a cut-short step is rolled back

    def __init__(
        self,
        cfg: RLConfig,
        policy: Policy | None = None,
        pretrain_data: Callable[[int], torch.Tensor] | None = None,
    ):
        self.cfg = cfg.validate()
        self.tcfg = cfg.trainer_config()
        self.out, self.steps, self.save_every = Path(cfg.out), cfg.steps, cfg.save_every
        self.max_grad_norm = cfg.max_grad_norm
        self.rank, self.world = distributed()
        if policy is None:
            policy, _ = build_policy(cfg)
        if policy.monitors_for is None and cfg.monitors:
            frozen = frozen_generators(policy)
            policy.monitors_for = build_monitors(cfg, frozen, self.tcfg.sample_steps)
        self.policy = policy
        self.chart_panels = chart_panels(cfg)
        self.pretrain_data = pretrain_data  # clean latents for ReFL's pre-training regulariser (by seed)
        self.prompts = cfg.prompt_list()
        self.eval_prompts = cfg.prompt_list("eval_prompts")
        self.warned = False
        self.names = _param_names(policy)
        # DiffusionNFT's EMA old policy (None: the old policy is the weights each step starts from)
        self.old_policy = OldPolicy(policy.params) if cfg.algorithm == "nft" and self.tcfg.nft_decay_rate > 0 else None

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the LoRA parameters."""
        return torch.optim.AdamW(self.policy.params, lr=self.cfg.learning_rate, weight_decay=0.0)

    # --- the runtime's contract -------------------------------------------------------------------------------
    def trainable(self) -> dict[str, torch.Tensor]:
        """The LoRA parameters by their module names (and nft's EMA old policy, `nft_old.` + name, when kept)."""
        tensors = dict(zip(self.names, self.policy.params))
        if self.old_policy is not None:
            tensors |= {f"{OLD_POLICY_PREFIX}{n}": t for n, t in zip(self.names, self.old_policy.tensors)}
        return tensors

    def config_record(self) -> dict[str, Any]:
        """The RLConfig as plain data."""
        return self.cfg.to_dict()

    def identity(self) -> dict[str, Any]:
        """Algorithm, LoRA shape and seed: a checkpoint with other values belongs to a different run."""
        ours = self.cfg.to_dict()
        return {k: ours[k] for k in RESUME_MUST_MATCH}

    def upgrade_saved_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Saved configs of the previous release used lr / rank / alpha / targets."""
        return {RENAMED_KEYS.get(k, k): v for k, v in config.items()}

    def legacy_checkpoint(self) -> tuple[Path, dict[str, torch.Tensor]] | None:
        """The previous release's `checkpoint/lora.safetensors` (PEFT names, without the adapter name)."""
        from safetensors.torch import load_file

        for ckpt in (self.out / "checkpoint", self.out / "checkpoint.old"):
            if (ckpt / "lora.safetensors").is_file() and (ckpt / "state.json").is_file():
                peft_named = load_file(str(ckpt / "lora.safetensors"))
                renamed = {n: peft_named.get(n.replace(".default.", ".")) for n in self.names}
                return ckpt, {n: t for n, t in renamed.items() if t is not None}
        return None

    def legacy_initial(self) -> dict[str, Any]:
        """The reward before training, from the summary the previous release wrote when the run started."""
        path = self.out / "summary.json"
        try:
            return {"reward_before": json.loads(path.read_text()).get("reward_before")} if path.is_file() else {}
        except ValueError:
            return {}

    def trainer_state(self) -> dict[str, Any]:
        """Whether the collapse warning was given already."""
        return {"warned": self.warned}

    def restore_trainer_state(self, state: dict[str, Any], rows: list[dict]) -> None:
        """Take back the collapse-warning flag."""
        self.warned = bool(state.get("warned", False))

    def begin(self) -> dict[str, Any]:
        """The held-out reward (and monitors, KL) of the model before training."""
        held_out = self.evaluate()
        return {"reward_before": held_out["reward"], "held_out_before": held_out}

    def train_step(self, run: Run) -> dict[str, Any]:
        """One step of the configured algorithm on this process's prompts; metrics, windowed std, warning."""
        self.policy.network.train()
        opt = Optimizing(run.backward, run.optimizer_step)
        prompts = self.step_prompts(run.step)
        # this process's prompts are the global batch's [rank * n, (rank + 1) * n): the seeds follow them, so W
        # processes sample what one process with W times the prompts per step would
        seed = self.cfg.seed * 1_000_003 + 1000 * (run.step + 1) + self.rank * self.cfg.prompts_per_step
        try:
            if self.cfg.algorithm == "raft":
                metrics = raft_step(self.policy, self.tcfg, prompts, seed, opt)
            elif self.cfg.algorithm == "refl":
                metrics = refl_step(self.policy, self.tcfg, prompts, seed, opt, self.pretrain_data)
            elif self.cfg.algorithm == "nft":
                metrics = nft_step(self.policy, self.tcfg, prompts, seed, opt, self.old_policy, run.step)
            else:
                metrics = grpo_step(self.policy, self.tcfg, prompts, seed, opt, step=run.step)
        finally:
            self.policy.network.eval()
        if self.cfg.eval_every and (run.step + 1) % self.cfg.eval_every == 0 and run.step + 1 < self.steps:
            metrics["held_out"] = self.evaluate()
        metrics["window_std"] = self.window_std(run.rows, metrics)
        warning = self.collapse_warning(run.rows, run.step + 1, metrics["window_std"])
        if warning:
            metrics["warning"] = warning
            log.warning("rewarddance train: %s", warning)
        return metrics

    def finish(self, run: Run) -> dict[str, Any]:
        """Held-out reward after training, the exported LoRA files and the reward-std summary."""
        held_out = self.evaluate()
        after, before = held_out["reward"], run.initial.get("reward_before")
        rows = [r for r in run.rows if "window_std" in r]
        warned = next((r["step"] for r in run.rows if r.get("warning")), None)
        return {
            "algorithm": self.cfg.algorithm,
            "reward_after": after,
            "held_out_after": held_out,
            "collapse_warning_step": warned,
            "relative_gain": (after - before) / abs(before) if before else None,
            "files": self.export(run.step) if run.main else {},
            "max_window_std": max((r["window_std"] for r in rows), default=None),
            "final_window_std": rows[-1]["window_std"] if rows else None,
        }

    # --- RL specifics -----------------------------------------------------------------------------------------
    def step_prompts(self, step: int) -> list[str]:
        """This process's prompts for a step: its contiguous share of the round-robin global batch."""
        n = self.cfg.prompts_per_step
        batch = [self.prompts[(step * n * self.world + i) % len(self.prompts)] for i in range(n * self.world)]
        return batch[self.rank * n : (self.rank + 1) * n]

    def window_std(self, rows: list[dict], metrics: dict) -> float:
        """Std of all rewards in the last `std_window` steps (pooled from per-step means and stds)."""
        recent = [r for r in rows if "reward_mean" in r][-(self.cfg.std_window - 1) :] + [metrics]
        mean = sum(r["reward_mean"] for r in recent) / len(recent)
        second = sum(r["reward_std"] ** 2 + r["reward_mean"] ** 2 for r in recent) / len(recent)
        return math.sqrt(max(second - mean**2, 0.0))

    def collapse_warning(self, rows: list[dict], step: int, window_std: float) -> str | None:
        """A warning (once) when the windowed reward std falls below `collapse_ratio` of its first full-window value."""
        full = [r["window_std"] for r in rows if r.get("step", 0) >= self.cfg.std_window and "window_std" in r]
        if step >= self.cfg.std_window:
            full.append(window_std)
        if self.warned or len(full) < 2 or full[0] <= 0:
            return None
        if window_std < self.cfg.collapse_ratio * full[0]:
            self.warned = True
            return (
                f"step {step}: the windowed reward std fell to {window_std:.4g} "
                f"(from {full[0]:.4g}): the generator may be collapsing onto what the reward likes (reward hacking); "
                "check the samples, lower learning_rate, add kl_beta or an ensemble of rewards"
            )
        return None

    def evaluate(self) -> dict[str, float]:
        """The policy's mean reward, monitors and KL to the frozen model on the held-out prompts and seeds."""
        steps = self.cfg.eval_steps or self.tcfg.sample_steps
        seeds = [EVAL_SEED_BASE + i for i in range(self.cfg.eval_seeds)]
        level = self.tcfg.noise_level or KL_NOISE_LEVEL
        return held_out_metrics(self.policy, self.eval_prompts, seeds, steps, level, self.policy.monitors_for)

    def export(self, step: int) -> dict[str, str]:
        """The LoRA as a ComfyUI file (for known families) and a PEFT directory."""
        spec = LoraSpec(self.cfg.lora_rank, self.cfg.lora_alpha, self.cfg.lora_targets)
        files = {"peft": str(save_peft_adapter(self.policy.network, spec, self.out / "lora_peft"))}
        family = self.policy.family
        if family is None:
            try:
                family = network_family(self.policy.network)
            except ValueError:
                family = None
        if family is not None:
            meta = {"algorithm": self.cfg.algorithm, "steps": step}
            path = save_comfyui_lora(self.policy.network, self.out / "lora_comfyui.safetensors", family, meta)
            files["comfyui"] = str(path)
        return files


def _param_names(policy: Policy) -> list[str]:
    """The module names of the policy's trainable parameters, in `policy.params` order."""
    by_id = {id(p): n for n, p in policy.network.named_parameters()}
    missing = [i for i, p in enumerate(policy.params) if id(p) not in by_id]
    if missing:
        raise ValueError(f"policy.params[{missing[0]}] is not a parameter of policy.network")
    return [by_id[id(p)] for p in policy.params]


def chart_panels(cfg: RLConfig) -> list[tuple[str, list[str]]]:
    """The chart of a run: training reward and windowed std, loss, KL, zero-std groups, and with `eval_every`
    the held-out reward, monitors and KL over steps."""
    if not cfg.eval_every:
        return CHART_PANELS
    from .config import monitor_name

    monitors = [f"held_out.{monitor_name(m)}" for m in cfg.monitors]
    return CHART_PANELS + [
        ("held-out reward / monitors", ["held_out.reward", *monitors]),
        ("held-out KL", ["held_out.kl"]),
    ]


def write_rl_chart(log_path: Path, out: Path, cfg: RLConfig | None = None) -> Path | None:
    """A PNG of reward mean and windowed std, loss, KL and clip fraction, zero-std ratio (and the held-out
    curves of a run with `eval_every`) over steps."""
    return write_chart(log_path, out, chart_panels(cfg) if cfg else CHART_PANELS)


def train_rl(
    cfg: RLConfig,
    policy: Policy | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    pretrain_data: Callable[[int], torch.Tensor] | None = None,
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
) -> dict:
    """Train (resuming from `cfg.out`'s checkpoint), evaluate before and after, export; returns a plain summary.

    `should_stop()` is asked after every step; it, Ctrl+C and SIGTERM-as-KeyboardInterrupt (or any of
    `interrupts`, e.g. ComfyUI's Cancel) checkpoint the run at its last finished step, and starting it again
    continues it. The summary then has "interrupted": True.
    """
    task = RLTask(cfg, policy, pretrain_data)
    return run_task(task, task.optimizer(), progress, should_stop, interrupts)
