"""Fine-tune a chat VLM into a RewardDance reward model (LoRA or full), with checkpoints, resume and logs.

    rewarddance train-rm --config rm.toml        # or train_reward_model(RMTrainConfig(...))

The result is a normal checkpoint directory (`<out>/model`, LoRA merged) with the source checkpoint's
tokenizer, chat template and preprocessor configs, so every loader (CLI, nodes, backend) reads it as is.
The loop, checkpoint (`<out>/checkpoint`: the trainable weights, the optimiser and the step), resume (a run
started again with the same config continues, after Ctrl+C or a crash), log, chart and multi-process
training are the shared run runtime's (`backend/runs.py`).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..dependencies import require
from ..model_sources import source_problem
from ..runs import Progress, Run, RunTask, distributed, run_task
from ..scoring.answer import AnswerTokens
from ..scoring.config import ScoringConfig
from ..training_record import write_training_record
from ..vlm.base import VisualOptions
from ..vlm.loading import load_vlm
from .data import PreferencePair, load_pairs, split_pairs
from .evaluation import evaluate_pairs
from .objectives import VisualCache, pairwise_examples, pairwise_loss, pointwise_examples, pointwise_loss

OBJECTIVES = ("pairwise", "pointwise")
COPIED_FILES = (
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
)
VISION_TOWER_NAMES = ("visual", "vision_tower", "vision_model")  # a parameter under one of these is the encoder's
RESUME_MUST_MATCH = (  # a checkpoint continues only the run these values define
    "model",
    "pairs",
    "objective",
    "scoring",
    "lora",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "freeze_vision",
    "batch_size",
    "seed",
)
CHART_PANELS = [
    ("training loss", ["loss"]),
    ("held-out pairwise accuracy", ["eval.pairwise_accuracy", "final_eval.pairwise_accuracy"]),
]


@dataclass
class RMTrainConfig:
    """Every training knob, validated in one place (TOML/YAML keys have the same names)."""

    model: str
    pairs: str
    out: str
    eval_pairs: str | None = None  # held-out set; default: eval_fraction of `pairs`
    eval_fraction: float = 0.1
    objective: str = "pairwise"
    scoring: dict[str, Any] = field(default_factory=dict)  # ScoringConfig fields (criteria, cot, question, ...)
    lora: bool = True
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    freeze_vision: bool = True
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    steps: int = 200
    batch_size: int = 4  # pairs per step
    dtype: str = "fp32"
    device: str = "auto"
    gradient_checkpointing: bool = False
    save_every: int = 50
    keep_checkpoints: int = 1  # checkpoint/ plus the newest N-1 earlier ones in checkpoints/step-N
    eval_every: int = 0  # 0: evaluate only at the end
    seed: int = 0
    pointwise_ce_weight: float = 0.1
    max_grad_norm: float = 1.0
    max_pixels: int | None = None

    def validate(self) -> RMTrainConfig:
        """Raise ValueError naming the bad key and the fix."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("steps", "batch_size", "lora_rank", "lora_alpha", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("save_every", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be 0 or a positive integer, got {value!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number, got {self.max_grad_norm!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction!r}")
        self.scoring_config()
        return self

    def scoring_config(self) -> ScoringConfig:
        """The ScoringConfig the model is trained (and later scored) with."""
        try:
            config = ScoringConfig().with_overrides(**self.scoring)
            if config.judge != "yes_no":
                raise ValueError(
                    f"judge {config.judge!r}: reward-model training teaches yes/no answers; use judge 'yes_no'"
                )
            return config
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scoring: {exc}") from exc


def load_train_config(path: str | Path) -> RMTrainConfig:
    """An RMTrainConfig from a TOML or YAML file (relative paths are relative to the file)."""
    from ..config_files import check_config_keys, read_config_file

    data = read_config_file(path)
    check_config_keys(data, {f.name for f in fields(RMTrainConfig)}, ("model", "pairs", "out"), path)
    base = Path(path).resolve().parent
    for key in ("pairs", "eval_pairs", "out"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    if isinstance(data.get("model"), str) and (base / data["model"]).is_dir():
        data["model"] = str(base / data["model"])
    cfg = RMTrainConfig(**data).validate()
    if cfg.lora:
        require("peft", "LoRA fine-tuning of a reward model (lora = true; or lora = false for full fine-tuning)")
    problem = source_problem(str(cfg.model), "model")
    if problem:
        raise ValueError(f"model: {problem}")
    for key in ("pairs", "eval_pairs"):
        if isinstance(getattr(cfg, key), str) and not Path(getattr(cfg, key)).exists():
            raise ValueError(
                f"{key}: {getattr(cfg, key)!r} does not exist (`rewarddance make-pairs` writes pairs files)"
            )
    return cfg


# --- the run ------------------------------------------------------------------------------------------------------
class RewardModelTraining(RunTask):
    """One reward-model training run under `cfg.out`: data, model, objective, export (on the run runtime)."""

    name = "rewarddance train-rm"
    chart_panels = CHART_PANELS

    def __init__(self, cfg: RMTrainConfig):
        self.cfg = cfg.validate()
        self.out, self.steps, self.save_every = Path(cfg.out), cfg.steps, cfg.save_every
        self.keep_checkpoints = cfg.keep_checkpoints
        self.max_grad_norm = cfg.max_grad_norm
        self.snapshot_each_step = cfg.lora  # cheap for adapters; a full fine-tune only drops the step's gradients
        self.rank, self.world = distributed()
        self.scoring = cfg.scoring_config()
        pairs = load_pairs(cfg.pairs)
        if cfg.eval_pairs:
            self.train_pairs, self.eval_pairs = pairs, load_pairs(cfg.eval_pairs)
        else:
            self.train_pairs, self.eval_pairs = split_pairs(pairs, cfg.eval_fraction, cfg.seed)
        if cfg.objective == "pairwise" and all(p.tie for p in self.train_pairs):
            raise ValueError(f"{cfg.pairs}: every training pair is a tie; the pairwise objective needs preferences")
        torch.manual_seed(cfg.seed)
        options = VisualOptions(max_pixels=cfg.max_pixels)
        self.vlm = load_vlm(cfg.model, dtype=cfg.dtype, device=cfg.device, options=options)
        self.peft_model = self._prepare_model()
        from ..scoring.scorer import Scorer

        self.scorer = Scorer(self.vlm)
        self.tokens = AnswerTokens.from_config(self.vlm.tokenizer, self.scoring)
        self.named = {n: p for n, p in self.vlm.model.named_parameters() if p.requires_grad}
        self.load = VisualCache()
        self.model_dir: Path | None = None

    def _prepare_model(self) -> Any:
        """Freeze what is not trained; add LoRA adapters in place (the scorer keeps using the same module)."""
        model = self.vlm.model
        model.train()
        if self.cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if not self.cfg.lora:
            for name, p in model.named_parameters():
                p.requires_grad_(not (self.cfg.freeze_vision and _in_vision_tower(name)))
            return None
        require("peft", "LoRA fine-tuning of a reward model (lora = true)")
        from peft import LoraConfig, get_peft_model

        for p in model.parameters():
            p.requires_grad_(False)
        lora = LoraConfig(
            r=self.cfg.lora_rank,
            lora_alpha=self.cfg.lora_alpha,
            target_modules=list(self.cfg.lora_targets),
            lora_dropout=0.0,
            bias="none",
        )
        peft_model = get_peft_model(model, lora)
        if self.cfg.freeze_vision:
            for name, p in model.named_parameters():
                if "lora_" in name and _in_vision_tower(name):
                    p.requires_grad_(False)
        return peft_model

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable weights."""
        return torch.optim.AdamW(
            list(self.named.values()), lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay
        )

    # --- the runtime's contract -------------------------------------------------------------------------------
    def trainable(self) -> dict[str, torch.Tensor]:
        """The weights being trained (LoRA adapters, or the unfrozen model weights)."""
        return self.named

    def config_record(self) -> dict[str, Any]:
        """The config as plain data."""
        return asdict(self.cfg)

    def identity(self) -> dict[str, Any]:
        """The config values that define the run (a checkpoint with others belongs to a different run)."""
        ours = asdict(self.cfg)
        return {k: ours[k] for k in RESUME_MUST_MATCH}

    def legacy_checkpoint(self) -> tuple[Path, dict[str, torch.Tensor]] | None:
        """The newest `checkpoints/step-N` the previous release wrote (same tensor names as today)."""
        from safetensors.torch import load_file

        root = self.out / "checkpoints"
        done = [p for p in root.glob("step-*") if (p / "trainable.safetensors").is_file()] if root.is_dir() else []
        done = [p for p in done if not p.name.endswith(".tmp")]
        if not done:
            return None
        newest = max(done, key=lambda p: p.name)
        return newest, load_file(str(newest / "trainable.safetensors"))

    def train_step(self, run: Run) -> dict[str, Any]:
        """The objective on this process's share of the step's pairs, one update."""
        pairs = self.batch(run.step)[self.rank :: self.world]
        loss, metrics = self.loss(pairs)
        run.backward(loss)
        run.optimizer_step()
        return {"loss": float(loss.detach()), **metrics}

    def after_step(self, run: Run, row: dict[str, Any]) -> None:
        """The periodic held-out evaluation (`eval_every`), logged as its own row."""
        if self.cfg.eval_every and run.step % self.cfg.eval_every == 0 and run.step < self.cfg.steps:
            run.log({"step": run.step, "eval": _short(self.evaluate())})

    def finish(self, run: Run) -> dict[str, Any]:
        """Export `<out>/model`, evaluate it; plain data (the model itself: `reward_model()`)."""
        if not run.main:
            return {}
        self.model_dir = self.export(run.step)
        metrics = self.evaluate()
        run.log({"step": run.step, "final_eval": _short(metrics)})
        return {
            "model": str(self.model_dir),
            "eval": metrics,
            "train_pairs": len(self.train_pairs),
            "eval_pairs": len(self.eval_pairs),
        }

    # --- data order: a seeded permutation per epoch, so step N always sees the same pairs ------------------------
    def batch(self, step: int) -> list[PreferencePair]:
        """The pairs of training step `step` (all processes together)."""
        pool = [p for p in self.train_pairs if not (p.tie and self.cfg.objective == "pairwise")]
        per_epoch = max(1, len(pool) // self.cfg.batch_size)
        epoch, index = divmod(step, per_epoch)
        order = list(range(len(pool)))
        random.Random(self.cfg.seed * 1_000_003 + epoch).shuffle(order)
        picked = order[index * self.cfg.batch_size : (index + 1) * self.cfg.batch_size]
        return [pool[i] for i in picked]

    def loss(self, pairs: list[PreferencePair]) -> tuple[torch.Tensor, dict]:
        """The objective on one batch of pairs."""
        if self.cfg.objective == "pairwise":
            examples = [e for p in pairs for e in pairwise_examples(p, self.scoring, self.load)]
            return pairwise_loss(self.scorer, examples)
        examples = [e for p in pairs for e in pointwise_examples(p, self.scoring, self.load)]
        return pointwise_loss(self.scorer, examples, self.tokens, self.cfg.pointwise_ce_weight)

    def reward_model(self) -> Any:
        """The model being trained as a RewardModel (in memory, with the run's scoring config)."""
        from ..reward_model import RewardModel

        return RewardModel(self.vlm, self.scoring)

    def evaluate(self) -> dict:
        """Held-out metrics of the model as it is now."""
        if not self.eval_pairs:
            return {}
        self.vlm.model.eval()
        try:
            return evaluate_pairs(self.reward_model(), self.eval_pairs)
        finally:
            self.vlm.model.train()

    # --- the export ---------------------------------------------------------------------------------------------
    def export(self, step: int) -> Path:
        """`<out>/model`: a normal checkpoint directory (LoRA merged) every loader reads."""
        target = self.out / "model"
        tmp = target.with_name("model.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model = self.peft_model.merge_and_unload() if self.peft_model is not None else self.vlm.model
        model.eval()
        model.save_pretrained(tmp, safe_serialization=True)
        self.vlm.tokenizer.save_pretrained(tmp)
        for name in COPIED_FILES:
            src = Path(self.vlm.path) / name
            if src.is_file():
                shutil.copy2(src, tmp / name)
        write_training_record(tmp, {"config": asdict(self.cfg), "step": step, "scoring": self.cfg.scoring})
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        self.vlm.model = model
        return target

    def train(
        self,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
        interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
    ) -> dict:
        """Run it on the runtime (resuming from `<out>/checkpoint`); the plain-data summary."""
        return run_task(self, self.optimizer(), progress, should_stop, interrupts)


def _in_vision_tower(name: str) -> bool:
    """True for parameters of the vision encoder (any family's naming)."""
    return any(part in VISION_TOWER_NAMES for part in name.split("."))


def _short(metrics: dict) -> dict:
    """Metrics without the reliability table (for log rows)."""
    return {k: v for k, v in metrics.items() if k != "reliability"}


def train_reward_model(
    cfg: RMTrainConfig,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
) -> dict:
    """Train (resuming from the checkpoint), export `<out>/model`, evaluate; returns a plain-data summary.

    `should_stop()` is asked after every step (a GUI's stop button); Ctrl+C works the same way: the run is
    checkpointed at its last finished step and starting it again continues it. For the trained model in memory,
    use `RewardModelTraining(cfg)`: `.train()` then `.reward_model()`.
    """
    return RewardModelTraining(cfg).train(progress, should_stop, interrupts)
