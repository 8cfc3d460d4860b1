"""The Reward LoRA Trainer node's inputs as an RLConfig, its prompt list and where its files go (no ComfyUI
imports: tested in CI; nodes/rl_training.py runs it inside ComfyUI)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .config import RLConfig

NODE_ALGORITHMS = ("raft", "grpo", "refl", "nft")
MAX_EVAL_PROMPTS = 4  # held-out reward before/after: the first prompts, EVAL_SEEDS seeds each
EVAL_SEEDS = 2


PROMPT_DIRS_ENV = "REWARDDANCE_PROMPT_DIRS"  # more folders prompt files may be read from (os.pathsep-separated)


def prompt_lines(text: str, prompt_dirs: list[str | Path] | None = None) -> list[str]:
    """One prompt per non-empty line, or the lines of a .txt file when `text` is one file name inside
    `prompt_dirs` (ComfyUI's input folder, plus $REWARDDANCE_PROMPT_DIRS): a relative name is looked up there, and
    a file elsewhere is refused, so a workflow cannot read any file of the machine into its outputs."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "prompts: enter the training prompts, one per line (or the path of a .txt file with one per line)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1 or not lines[0].lower().endswith(".txt"):
        return lines
    folders = allowed_prompt_dirs(prompt_dirs)
    path = find_prompt_file(lines[0], folders)
    if path is None:
        given = Path(lines[0]).expanduser()
        if given.is_file() or any((folder / given).is_file() for folder in folders):
            raise ValueError(
                f"prompts: {lines[0]!r} is outside the folders prompt files are read from "
                f"({', '.join(map(str, folders)) or 'none'}); copy it into ComfyUI's input folder or add its "
                f"folder to ${PROMPT_DIRS_ENV}"
            )
        return lines  # a one-line prompt that merely ends in .txt
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompts: {path} is not a UTF-8 text file ({exc})") from exc
    if not lines:
        raise ValueError(f"prompts: the file {path} has no prompts (one per line)")
    return lines


def allowed_prompt_dirs(prompt_dirs: list[str | Path] | None) -> list[Path]:
    """The given folders plus those of $REWARDDANCE_PROMPT_DIRS, resolved."""
    extra = [d for d in os.environ.get(PROMPT_DIRS_ENV, "").split(os.pathsep) if d.strip()]
    return [Path(d).expanduser().resolve() for d in [*(prompt_dirs or []), *extra]]


def find_prompt_file(name: str, folders: list[Path]) -> Path | None:
    """The file `name` (absolute, or relative to one of `folders`) when it lies inside one of them."""
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [folder / given for folder in folders]
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved.is_file() and any(resolved.is_relative_to(folder) for folder in folders):
            return resolved
    return None


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
        if self.algorithm in ("grpo", "nft") and self.group_size < 2:
            raise ValueError(
                f"group_size: {self.algorithm} compares images of the same prompt; use 2 or more (4-8 is typical)"
            )
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
    """(run directory with checkpoint, log and chart; the final LoRA file) under ComfyUI's output directory; a
    prefix that would land anywhere else (`..`, `.`, an absolute path, a link out) is refused."""
    prefix = filename_prefix.strip().replace("\\", "/").strip("/")
    parts = prefix.split("/")
    if not prefix or any(part in ("", ".", "..") for part in parts) or not re.fullmatch(r"[\w\-./ ]+", prefix):
        raise ValueError(
            f"filename_prefix: {filename_prefix!r} is not a usable relative name; use e.g. 'loras/my_reward_lora'"
        )
    root = Path(output_dir).resolve()
    base = root / prefix
    if not base.parent.resolve().is_relative_to(root):
        raise ValueError(f"filename_prefix: {filename_prefix!r} leads outside ComfyUI's output folder")
    return base.with_name(base.name + "_run"), base.with_name(base.name + ".safetensors")


def step_lora_path(final: Path, step: int) -> Path:
    """The ComfyUI LoRA written at a checkpoint step (next to the final file)."""
    return final.with_name(f"{final.stem}_step{step:05d}.safetensors")
