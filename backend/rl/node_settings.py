"""The Reward LoRA Trainer node's inputs as an RLConfig, its prompt list and where its files go (no ComfyUI
imports: tested in CI; nodes/rl_training.py runs it inside ComfyUI)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .config import RLConfig

NODE_ALGORITHMS = ("raft", "grpo", "refl")
MAX_EVAL_PROMPTS = 4  # held-out reward before/after: the first prompts, EVAL_SEEDS seeds each
EVAL_SEEDS = 2


def prompt_lines(text: str) -> list[str]:
    """One prompt per non-empty line, or the lines of a text file when `text` is a single existing path."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "prompts: enter the training prompts, one per line (or the path of a .txt file with one per line)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and Path(lines[0]).expanduser().is_file():
        path = Path(lines[0]).expanduser()
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise ValueError(f"prompts: {path} is not a UTF-8 text file ({exc})") from exc
        if not lines:
            raise ValueError(f"prompts: the file {path} has no prompts (one per line)")
    return lines


@dataclass
class NodeTraining:
    """The node's training widgets."""

    algorithm: str
    steps: int
    learning_rate: float
    lora_rank: int
    lora_alpha: float
    group_size: int
    sample_steps: int
    seed: int
    save_every: int

    def validate(self) -> NodeTraining:
        if self.algorithm not in NODE_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(NODE_ALGORITHMS)}, got {self.algorithm!r}")
        if self.algorithm == "grpo" and self.group_size < 2:
            raise ValueError("group_size: grpo compares images of the same prompt; use 2 or more (4-8 is typical)")
        if not 0 < self.learning_rate < 1:
            raise ValueError(
                f"learning_rate must be in (0, 1) (1e-4 is a good start for a LoRA), got {self.learning_rate}"
            )
        if self.sample_steps < 2:
            raise ValueError(f"sample_steps must be at least 2, got {self.sample_steps}")
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ValueError(f"lora_rank must be >= 1 and lora_alpha > 0, got {self.lora_rank} and {self.lora_alpha}")
        return self

    def config(self, prompts: list[str], out: Path) -> RLConfig:
        """The RLConfig of a node run (one prompt per step, round-robin; the reward model is the node's)."""
        trainer = {"group_size": self.group_size, "sample_steps": self.sample_steps}
        if self.algorithm == "refl":
            trainer["grad_steps"] = 1
            trainer["random_stop"] = min(2, self.sample_steps - 1)
        if self.algorithm == "raft":
            trainer["raft_keep"] = 1
        return RLConfig(
            algorithm=self.algorithm,
            out=str(out),
            prompts=prompts,
            steps=self.steps,
            learning_rate=self.learning_rate,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            prompts_per_step=1,
            eval_prompts=prompts[:MAX_EVAL_PROMPTS],
            eval_seeds=EVAL_SEEDS,
            seed=self.seed,
            save_every=self.save_every,
            generator={"kind": "comfyui"},
            rewards=[{"kind": "pointwise", "model": "the node's reward_model"}],
            trainer=trainer,
        ).validate()


def output_paths(output_dir: str | Path, filename_prefix: str) -> tuple[Path, Path]:
    """(run directory with checkpoint, log and chart; the final LoRA file) under ComfyUI's output directory."""
    prefix = filename_prefix.strip().replace("\\", "/").strip("/")
    if not prefix or ".." in prefix.split("/") or not re.fullmatch(r"[\w\-./ ]+", prefix):
        raise ValueError(
            f"filename_prefix: {filename_prefix!r} is not a usable relative name; use e.g. 'loras/my_reward_lora'"
        )
    base = Path(output_dir) / prefix
    return base.with_name(base.name + "_run"), base.with_name(base.name + ".safetensors")


def step_lora_path(final: Path, step: int) -> Path:
    """The ComfyUI LoRA written at a checkpoint step (next to the final file)."""
    return final.with_name(f"{final.stem}_step{step:05d}.safetensors")
