"""Fine-tune a chat VLM into a RewardDance reward model (LoRA or full), with checkpoints, resume and logs.

    rewarddance train-rm --config rm.toml        # or train_reward_model(RMTrainConfig(...))

The result is a normal checkpoint directory (`<out>/model`, LoRA merged) with the source checkpoint's
tokenizer, chat template and preprocessor configs, so every loader (CLI, nodes, backend) reads it as is.
Checkpoints (`<out>/checkpoints/step-N`) hold the trainable weights, the optimiser and the step; a run
started again with the same config continues from the newest one (after Ctrl+C or a crash).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..run_log import append_row, read_rows, truncate_after
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
VISION_PREFIXES = ("visual", "vision_tower", "vision_model", "model.visual", "model.vision_tower")


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
    eval_every: int = 0  # 0: evaluate only at the end
    seed: int = 0
    pointwise_ce_weight: float = 0.1
    max_pixels: int | None = None

    def validate(self) -> RMTrainConfig:
        """Raise ValueError naming the bad key and the fix."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("steps", "batch_size", "lora_rank", "lora_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("save_every", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be 0 or a positive integer, got {value!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction!r}")
        self.scoring_config()
        return self

    def scoring_config(self) -> ScoringConfig:
        """The ScoringConfig the model is trained (and later scored) with."""
        try:
            return ScoringConfig().with_overrides(**self.scoring)
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
    return RMTrainConfig(**data).validate()


# --- the run ------------------------------------------------------------------------------------------------------
class Run:
    """One training run: data, model, optimiser, checkpoints and logs under `cfg.out`."""

    def __init__(self, cfg: RMTrainConfig):
        self.cfg = cfg.validate()
        self.out = Path(cfg.out)
        self.scoring = cfg.scoring_config()
        pairs = load_pairs(cfg.pairs)
        if cfg.eval_pairs:
            self.train_pairs, self.eval_pairs = pairs, load_pairs(cfg.eval_pairs)
        else:
            self.train_pairs, self.eval_pairs = split_pairs(pairs, cfg.eval_fraction, cfg.seed)
        if cfg.objective == "pairwise" and all(p.tie for p in self.train_pairs):
            raise ValueError(f"{cfg.pairs}: every training pair is a tie; the pairwise objective needs preferences")
        torch.manual_seed(cfg.seed)
        self.vlm = load_vlm(
            cfg.model, dtype=cfg.dtype, device=cfg.device, options=VisualOptions(max_pixels=cfg.max_pixels)
        )
        self.peft_model = self._prepare_model()
        from ..scoring.scorer import Scorer

        self.scorer = Scorer(self.vlm)
        self.tokens = AnswerTokens.from_config(self.vlm.tokenizer, self.scoring)
        self.params = [p for p in self.vlm.model.parameters() if p.requires_grad]
        self.names = [n for n, p in self.vlm.model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.load = VisualCache()
        self.step = 0

    def _prepare_model(self) -> Any:
        """Freeze what is not trained; add LoRA adapters in place (the scorer keeps using the same module)."""
        model = self.vlm.model
        model.train()
        if self.cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if self.cfg.lora:
            from peft import LoraConfig, get_peft_model

            for p in model.parameters():
                p.requires_grad_(False)
            targets = [n for n in self.cfg.lora_targets]
            peft_model = get_peft_model(
                model,
                LoraConfig(
                    r=self.cfg.lora_rank,
                    lora_alpha=self.cfg.lora_alpha,
                    target_modules=targets,
                    lora_dropout=0.0,
                    bias="none",
                ),
            )
            if self.cfg.freeze_vision:
                for name, p in model.named_parameters():
                    if "lora_" in name and _in_vision_tower(name):
                        p.requires_grad_(False)
            return peft_model
        for name, p in model.named_parameters():
            p.requires_grad_(not (self.cfg.freeze_vision and _in_vision_tower(name)))
        return None

    # --- data order: a seeded permutation per epoch, so step N always sees the same pairs ------------------------
    def batch(self, step: int) -> list[PreferencePair]:
        """The pairs of training step `step`."""
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

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        return self.out / "checkpoints" / f"step-{step:07d}"

    def save_checkpoint(self) -> Path:
        """Trainable weights, optimiser and step (written to a temp dir, then renamed: never half-written)."""
        from safetensors.torch import save_file

        final = self.checkpoint_dir(self.step)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {n: p.detach().contiguous().cpu() for n, p in zip(self.names, self.params)},
            str(tmp / "trainable.safetensors"),
        )
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": self.step, "config": asdict(self.cfg)}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def latest_checkpoint(self) -> Path | None:
        root = self.out / "checkpoints"
        done = (
            sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
            if root.is_dir()
            else []
        )
        return done[-1] if done else None

    def resume(self) -> bool:
        """Continue from the newest checkpoint, if any."""
        from safetensors.torch import load_file

        ckpt = self.latest_checkpoint()
        if ckpt is None:
            return False
        saved = load_file(str(ckpt / "trainable.safetensors"))
        if set(saved) != set(self.names):
            raise ValueError(
                f"{ckpt}: its trainable weights do not match this config (LoRA / freezing changed?); "
                "use a new out directory"
            )
        with torch.no_grad():
            for n, p in zip(self.names, self.params):
                p.copy_(saved[n].to(p.device, p.dtype))
        self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        self.step = json.loads((ckpt / "state.json").read_text())["step"]
        truncate_after(self.out / "log.jsonl", self.step)  # rows a crashed run logged after this checkpoint
        return True

    # --- logs ---------------------------------------------------------------------------------------------------
    def log(self, row: dict) -> None:
        append_row(self.out / "log.jsonl", row)

    def evaluate(self) -> dict:
        """Held-out metrics of the model as it is now."""
        from ..reward_model import RewardModel

        if not self.eval_pairs:
            return {}
        self.vlm.model.eval()
        try:
            return evaluate_pairs(RewardModel(self.vlm, self.scoring), self.eval_pairs)
        finally:
            self.vlm.model.train()

    # --- the export ---------------------------------------------------------------------------------------------
    def export(self) -> Path:
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
        write_training_record(tmp, {"config": asdict(self.cfg), "step": self.step, "scoring": self.cfg.scoring})
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        self.vlm.model = model
        return target


def _in_vision_tower(name: str) -> bool:
    """True for parameters of the vision encoder (any family's naming)."""
    parts = name.split(".")
    return any(p in ("visual", "vision_tower", "vision_model") for p in parts)


def train_reward_model(
    cfg: RMTrainConfig,
    progress: Callable[[int, int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train (resuming from the newest checkpoint), export `<out>/model`, evaluate; returns a summary.

    `should_stop()` is asked after every step (a GUI's stop button); Ctrl+C works the same way: the
    current step is checkpointed and the run can be started again to continue.
    """
    run = Run(cfg)
    resumed = run.resume()
    started = time.perf_counter()
    interrupted = False
    try:
        while run.step < cfg.steps:
            loss, metrics = run.loss(run.batch(run.step))
            if not torch.isfinite(loss):
                run.optimizer.zero_grad(set_to_none=True)
                run.log({"step": run.step + 1, "skipped": f"non-finite loss {float(loss)}"})
                print(f"rewarddance: step {run.step + 1}: non-finite loss, step skipped")
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(run.params, 1.0)
                run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
                run.log(
                    {
                        "step": run.step + 1,
                        "loss": float(loss.detach()),
                        **metrics,
                        "time_s": time.perf_counter() - started,
                    }
                )
            run.step += 1
            if progress is not None:
                progress(run.step, cfg.steps, {"loss": float(loss.detach()), **metrics})
            if cfg.save_every and run.step % cfg.save_every == 0:
                run.save_checkpoint()
            if cfg.eval_every and run.step % cfg.eval_every == 0 and run.step < cfg.steps:
                run.log({"step": run.step, "eval": _short(run.evaluate())})
            if should_stop is not None and should_stop():
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        path = run.save_checkpoint()
        return {"interrupted": True, "step": run.step, "checkpoint": str(path), "resumed": resumed}
    model_dir = run.export()
    metrics = run.evaluate()
    run.log({"step": run.step, "final_eval": _short(metrics)})
    write_chart(run.out / "log.jsonl", run.out / "chart.png")
    from ..reward_model import RewardModel

    return {
        "interrupted": False,
        "step": run.step,
        "model": str(model_dir),
        "eval": metrics,
        "resumed": resumed,
        "train_pairs": len(run.train_pairs),
        "eval_pairs": len(run.eval_pairs),
        "reward_model": RewardModel(run.vlm, run.scoring),
    }  # the trained model, in memory


def _short(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "reliability"}


def write_chart(log_path: Path, out: Path) -> Path | None:
    """A PNG of the training loss (and held-out pairwise accuracy when logged) over steps."""
    from ..charts import line_panels

    rows = read_rows(log_path)
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r and math.isfinite(r["loss"])]
    acc = [
        (r["step"], (r.get("eval") or r.get("final_eval") or {}).get("pairwise_accuracy"))
        for r in rows
        if (r.get("eval") or r.get("final_eval"))
    ]
    acc = [(s, a) for s, a in acc if a is not None]
    if not loss:
        return None
    panels = [("training loss", {"loss": loss})]
    if acc:
        panels.append(("held-out pairwise accuracy", {"accuracy": acc}))
    line_panels(panels).save(out)
    return out
