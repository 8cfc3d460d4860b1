"""An RL run's settings (TOML/YAML or Python) and how they turn into a Policy: the generator with LoRA and
the rewards (pointwise, pairwise against best-of-N tournament references of the frozen model, remote,
weighted ensembles, with an optional transform)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import InitVar, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..dependencies import require
from ..generators.protocol import seeded_noise
from ..model_sources import source_problem
from ..rewards import (
    COMBINES,
    ColourReward,
    Ensemble,
    GroupWinRate,
    ImageStatistic,
    ModelReward,
    RemoteReward,
    Reward,
    Transformed,
)
from ..rewards.statistics import STATISTICS
from ..runs import renamed_keys
from ..scoring.judges import JUDGES
from .lora import LoraSpec, add_lora
from .trainers import ALGORITHMS, Policy, TrainerConfig

RENAMED_KEYS = {"lr": "learning_rate", "rank": "lora_rank", "alpha": "lora_alpha", "targets": "lora_targets"}
GENERATOR_KINDS = ("tiny", "diffusers", "comfyui")  # comfyui: the Reward LoRA Trainer node passes its own Policy
REWARD_KINDS = ("pointwise", "pairwise", "pairwise_group", "colour", "statistic", "python")
MODEL_KINDS = ("pointwise", "pairwise", "pairwise_group")  # kinds scored by a reward model or a server


@dataclass
class RLConfig:
    """Everything one `rewarddance train` run needs; validated as a whole by `validate`."""

    algorithm: str
    out: str
    prompts: list[str] | str  # a list, or a text file with one prompt per line
    steps: int = 100
    learning_rate: float = 3e-4
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: list[str] | str | None = None  # module names or a regex; None: the network family's defaults
    prompts_per_step: int = 2
    eval_prompts: list[str] | str | None = None  # default: the training prompts
    eval_seeds: int = 4  # held-out seeds 1000000.. (never used in training)
    eval_steps: int | None = None  # ODE steps for evaluation (default: sample_steps)
    seed: int = 0
    save_every: int = 10
    max_grad_norm: float = 1.0
    std_window: int = 10  # steps in the windowed reward std (the reward-hacking signal)
    collapse_ratio: float = 0.2  # warn when the windowed std falls below this fraction of its first value
    # {kind, path, ...}, or a path string: a tiny generator directory or a diffusers pipeline path / hub id
    generator: dict[str, Any] | str = field(default_factory=lambda: {"kind": "tiny"})
    rewards: list[dict[str, Any]] = field(default_factory=lambda: [{"kind": "colour"}])
    reward_weights: list[float] | None = None
    reward_transform: str = "none"
    reward_combine: str = "sum"  # several rewards: "sum" (weighted by reward_weights) or "min" (the worst case)
    monitors: list[dict[str, Any]] = field(default_factory=list)  # measured on held-out samples, never optimised
    eval_every: int = 0  # also evaluate (reward, monitors, KL) every this many steps; 0: before and after only
    trainer: dict[str, Any] = field(default_factory=dict)  # TrainerConfig fields
    # Deprecated spellings (one release): lr, rank, alpha, targets.
    lr: InitVar[float | None] = None
    rank: InitVar[int | None] = None
    alpha: InitVar[float | None] = None
    targets: InitVar[list[str] | str | None] = None

    def __post_init__(self, lr: Any, rank: Any, alpha: Any, targets: Any) -> None:
        """Move values given under a deprecated name to the new field (with a deprecation warning)."""
        given = {k: v for k, v in {"lr": lr, "rank": rank, "alpha": alpha, "targets": targets}.items() if v is not None}
        for new, value in renamed_keys(given, RENAMED_KEYS, "RLConfig").items():
            setattr(self, new, value)
        self.generator = generator_spec(self.generator)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "RLConfig") -> RLConfig:
        """An RLConfig from plain data, accepting the deprecated key names (with a warning)."""
        return cls(**renamed_keys(data, RENAMED_KEYS, where))

    def validate(self) -> RLConfig:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        for name in ("steps", "prompts_per_step", "eval_seeds"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.save_every, int) and self.save_every >= 0):
            raise ValueError(
                f"save_every must be 0 (only at the end and on interrupt) or a positive integer, got {self.save_every!r}"
            )
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not isinstance(self.generator, dict):
            raise ValueError(f"generator must be a table {{kind, path, ...}} or a path string, got {self.generator!r}")
        if self.generator.get("kind") not in GENERATOR_KINDS:
            raise ValueError(
                f"generator.kind must be one of {', '.join(GENERATOR_KINDS)}, got {self.generator.get('kind')!r}"
            )
        if not self.rewards:
            raise ValueError("rewards: give at least one reward")
        for where, specs in (("rewards", self.rewards), ("monitors", self.monitors)):
            for r in specs:
                check_reward_spec(r, where)
        names = [monitor_name(m) for m in self.monitors]
        if len(set(names)) != len(names):
            raise ValueError(f"monitors: two monitors measure under the same name ({names}); give each a `label`")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"reward_weights: {len(self.reward_weights)} weights for {len(self.rewards)} rewards")
        if self.reward_combine not in COMBINES:
            raise ValueError(f"reward_combine must be one of {', '.join(COMBINES)}, got {self.reward_combine!r}")
        if self.reward_combine == "min" and self.reward_weights is not None:
            raise ValueError("reward_weights apply to reward_combine = 'sum'; the worst case ('min') takes no weights")
        if isinstance(self.eval_every, bool) or not (isinstance(self.eval_every, int) and self.eval_every >= 0):
            raise ValueError(
                f"eval_every must be 0 (before and after only) or a positive integer, got {self.eval_every!r}"
            )
        tcfg = self.trainer_config()
        if self.algorithm == "nft" and tcfg.group_size < 2:
            raise ValueError(
                f"trainer.group_size: nft normalises each image's reward within its prompt's group; use 2 or more "
                f"(4-8 is typical), got {tcfg.group_size}"
            )
        if isinstance(self.lora_rank, bool) or not (isinstance(self.lora_rank, int) and self.lora_rank >= 1):
            raise ValueError(f"lora_rank must be a positive integer, got {self.lora_rank!r}")
        if isinstance(self.lora_alpha, bool) or not (isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0):
            raise ValueError(f"lora_alpha must be a positive number, got {self.lora_alpha!r}")
        if not self.prompt_list():
            raise ValueError("prompts: no prompts given")
        return self

    def trainer_config(self) -> TrainerConfig:
        known = {f.name for f in fields(TrainerConfig)}
        unknown = sorted(set(self.trainer) - known)
        if unknown:
            raise ValueError(f"trainer: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return TrainerConfig(**self.trainer).validate()
        except ValueError as exc:  # name the table the knob lives in: trainer = { window_mode = ... }
            raise ValueError(f"trainer: {exc}") from None

    def prompt_list(self, which: str = "prompts") -> list[str]:
        value = getattr(self, which)
        if which == "eval_prompts" and value is None:
            return self.prompt_list()
        if isinstance(value, str):
            path = Path(value)
            if not path.is_file():
                raise ValueError(
                    f"{which}: {value!r} is not a file; give a list of prompts or a text file (one per line)"
                )
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [str(p) for p in value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_reward_spec(spec: Any, where: str) -> None:
    """Raise ValueError naming the bad key of one `rewards` / `monitors` entry."""
    if not isinstance(spec, dict):
        raise ValueError(f'{where}: each entry is a table like {{kind = "pointwise", model = "..."}}, got {spec!r}')
    kind = spec.get("kind")
    if kind not in REWARD_KINDS:
        raise ValueError(f"{where}[].kind must be one of {', '.join(REWARD_KINDS)}, got {kind!r}")
    if kind in MODEL_KINDS and not (spec.get("model") or spec.get("url")):
        raise ValueError(
            f"a {kind} entry of {where} needs `model` (a checkpoint) or `url` (a rewarddance serve backend)"
        )
    if kind == "statistic" and spec.get("name") not in STATISTICS:
        raise ValueError(
            f"a statistic entry of {where} needs `name`, one of {', '.join(STATISTICS)}; got {spec.get('name')!r}"
        )
    if "judge" in spec and (
        kind not in MODEL_KINDS or not isinstance(spec["judge"], str) or spec["judge"] not in JUDGES
    ):
        raise ValueError(
            f"{where}[].judge applies to {', '.join(MODEL_KINDS)} entries and must be one of {', '.join(JUDGES)}; "
            f"got {spec['judge']!r} in a {kind} entry"
        )
    if kind == "python" and not (isinstance(spec.get("function"), str) and ":" in spec["function"]):
        raise ValueError(
            f'a python entry of {where} needs `function = "judge.py:name"` (a file or module and a function in it)'
        )


def load_rl_config(path: str | Path) -> RLConfig:
    """An RLConfig from a TOML or YAML file (relative paths are relative to the file)."""
    from ..config_files import check_config_keys, read_config_file

    data = renamed_keys(read_config_file(path), RENAMED_KEYS, str(path))
    check_config_keys(data, {f.name for f in fields(RLConfig)}, ("algorithm", "out", "prompts"), path)
    base = Path(path).resolve().parent

    def local(value: Any) -> Any:
        return str(base / value) if isinstance(value, str) and (base / value).exists() else value

    data["out"] = str(base / data["out"])  # an absolute `out` stays as it is
    for key in ("prompts", "eval_prompts"):
        data[key] = local(data.get(key))
    if isinstance(data.get("generator"), str):
        data["generator"] = local(data["generator"])
    for section in [data.get("generator", {})] + list(data.get("rewards", [])) + list(data.get("monitors", [])):
        if not isinstance(section, dict):
            continue
        for key in ("path", "model"):
            if key in section:
                section[key] = local(section[key])
        if isinstance(section.get("function"), str) and ":" in section["function"]:
            file, _, name = section["function"].rpartition(":")
            section["function"] = f"{local(file)}:{name}"
    return check_sources(RLConfig(**data).validate())


def check_sources(cfg: RLConfig) -> RLConfig:
    """Refuse a config whose generator or reward/monitor models are neither directories nor hub ids we can fetch,
    or that needs a package that is not installed (before the generator loads and trains for minutes)."""
    require("peft", "LoRA training of a generator")
    g = generator_spec(cfg.generator)
    if g.get("kind") == "diffusers" and isinstance(g.get("path"), str):
        problem = source_problem(g["path"], "generator")
        if problem:
            raise ValueError(f"generator.path: {problem}")
    for where, specs in (("rewards", cfg.rewards), ("monitors", cfg.monitors)):
        for spec in specs:
            if isinstance(spec.get("model"), str) and not spec.get("url"):
                problem = source_problem(spec["model"], "reward model")
                if problem:
                    raise ValueError(f"{where}[].model: {problem}")
    return cfg


# --- building the policy -----------------------------------------------------------------------------------------
def generator_spec(value: Any) -> Any:
    """`generator` as a table: a path string becomes {kind = "tiny" for a tiny generator directory, else
    "diffusers", path}; anything else is returned as it is (validate checks it)."""
    from ..generators.tiny_checkpoint import is_tiny_generator

    if isinstance(value, str):
        return {"kind": "tiny" if is_tiny_generator(value) else "diffusers", "path": value}
    return value


def build_tiny_generator(g: dict[str, Any], out: Path, seed: int) -> Any:
    """The tiny flow generator of `g`: a tiny generator directory, a .safetensors file of its network (width from
    the weights), or, with neither, one fitted once and kept with the run (so a resumed run starts from it)."""
    from safetensors.torch import load_file, save_file

    from ..generators.diffusers_adapter import tiny_generator_for
    from ..generators.tiny_checkpoint import load_tiny_generator
    from ..generators.tiny_flow import TinyFlowGenerator, TinyVelocityNet, train_tiny_flow

    base = Path(g["path"]) if g.get("path") else out / "base_tiny_flow.safetensors"
    if base.is_dir():
        gen = load_tiny_generator(base, g.get("device", "cpu"))
    elif base.is_file():
        state = load_file(str(base))
        net = TinyVelocityNet(width=state["inp.weight"].shape[0])
        net.load_state_dict(state)
        gen = TinyFlowGenerator(net, size=int(g.get("size", 16)))
    else:
        gen = train_tiny_flow(steps=int(g.get("train_steps", 300)), size=int(g.get("size", 16)), seed=seed)
        base.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in gen.net.state_dict().items()}, str(base))
    options = {k: g.get(k) for k in ("guidance", "height", "width", "frames")}
    try:
        return tiny_generator_for(gen, **options)
    except ValueError as exc:
        raise ValueError(f"generator: {exc}") from exc


def build_generator(cfg: RLConfig, out: Path) -> tuple[Callable[[str], Any], torch.nn.Module, Any]:
    """(generator for a prompt, the denoiser network, the tiny generator or pipeline) from `cfg.generator`."""
    from ..generators.tiny_checkpoint import is_tiny_generator

    g = dict(generator_spec(cfg.generator))
    if g["kind"] == "tiny" or (g["kind"] == "diffusers" and is_tiny_generator(g.get("path"))):
        gen = build_tiny_generator(g, out, cfg.seed)
        return (lambda prompt: gen), gen.net, gen
    if g["kind"] != "diffusers":
        raise ValueError(
            f"generator.kind {g['kind']!r}: runs from a config file use 'tiny' or 'diffusers' "
            "('comfyui' is for the ComfyUI Reward LoRA Trainer node)"
        )
    from ..generators.diffusers_adapter import generator_for, load_pipeline

    if not g.get("path"):
        raise ValueError("generator.path: give a diffusers pipeline directory or hub id")
    try:
        pipe = load_pipeline(
            g["path"], g.get("device", "cuda" if torch.cuda.is_available() else "cpu"), g.get("dtype", "fp32")
        )
    except ValueError as exc:
        raise ValueError(f"generator.path: {exc}") from exc
    network = getattr(pipe, "transformer", None) or pipe.unet
    cache: dict[str, Any] = {}

    def for_prompt(prompt: str) -> Any:
        if prompt not in cache:
            cache[prompt] = generator_for(
                pipe, prompt, g.get("negative", ""), g.get("guidance"), g.get("height"), g.get("width"), g.get("frames")
            )
        return cache[prompt]

    return for_prompt, network, pipe


class RewardSpecs:
    """Rewards from their config specs (`rewards` and `monitors` entries), sharing one loaded backend per model
    or server. Pairwise rewards pick each prompt's reference by a round-robin tournament over
    `reference_candidates` samples of the frozen model."""

    def __init__(self, frozen_generator_for: Callable[[str], Any], sample_steps: int):
        self.frozen_generator_for, self.sample_steps = frozen_generator_for, sample_steps
        self.loaded: dict[tuple, Any] = {}
        self.references: dict[tuple, Any] = {}

    def backend(self, spec: dict) -> Any:
        """The RewardModel or RewardClient of a spec (loaded once per model or URL)."""
        key = (spec.get("url"), spec.get("model"), spec.get("dtype", "auto"), spec.get("device", "auto"))
        if key not in self.loaded:
            if spec.get("url"):
                from ..client import RewardClient

                self.loaded[key] = RewardClient(spec["url"], token=spec.get("token"), model=spec.get("name"))
            else:
                from ..reward_model import RewardModel

                self.loaded[key] = RewardModel.from_pretrained(
                    spec["model"], dtype=spec.get("dtype", "auto"), device=spec.get("device", "auto")
                )
        return self.loaded[key]

    def reference(self, spec: dict, prompt: str) -> Any:
        """The frozen model's best sample for `prompt` by a tournament of the spec's reward model."""
        n = int(spec.get("reference_candidates", 8))
        key = (spec.get("url"), spec.get("model"), n, prompt)
        if key not in self.references:
            from ..generators.sampling import sample

            gen = self.frozen_generator_for(prompt)
            seed = 2_000_000 + zlib.crc32(prompt.encode()) % 100_000
            with torch.no_grad():
                images = gen.decode(sample(gen, seeded_noise(gen, n, seed), self.sample_steps)).float().cpu()
            judge = {"judge": spec["judge"]} if spec.get("judge") else {}
            winner = self.backend(spec).tournament(images, prompt, **judge).ranking[0]
            self.references[key] = images[winner : winner + 1]
        return self.references[key]

    def reward(self, spec: dict, prompt: str) -> Reward:
        """The reward one spec gives for `prompt`."""
        options = {k: spec[k] for k in ("criteria", "judge") if spec.get(k)}
        kind = spec["kind"]
        if kind == "colour":
            return ColourReward(int(spec.get("channel", 0)))
        if kind == "statistic":
            return ImageStatistic(spec["name"])
        if kind == "python":
            from ..rewards.python_judge import load_judge

            return load_judge(spec["function"])
        if kind == "pairwise_group":
            return GroupWinRate(self.backend(spec), prompt, options=options)
        ref = self.reference(spec, prompt) if kind == "pairwise" else None
        if spec.get("url"):
            return RemoteReward(self.backend(spec), prompt, reference=ref, options=options)
        return ModelReward(self.backend(spec), prompt, reference=ref, options=options)


def build_rewards(
    cfg: RLConfig, frozen_generator_for: Callable[[str], Any], sample_steps: int, specs: RewardSpecs | None = None
) -> Callable[[str], Reward]:
    """reward for a prompt: the configured rewards (an ensemble when several: weighted sum or worst case),
    transformed."""
    specs = specs or RewardSpecs(frozen_generator_for, sample_steps)

    def for_prompt(prompt: str) -> Reward:
        parts = [specs.reward(spec, prompt) for spec in cfg.rewards]
        if len(parts) == 1 and not cfg.reward_weights:
            reward = parts[0]
        else:
            reward = Ensemble(parts, cfg.reward_weights, combine=cfg.reward_combine)
        return reward if cfg.reward_transform == "none" else Transformed(reward, cfg.reward_transform)

    return for_prompt


def build_monitors(
    cfg: RLConfig, frozen_generator_for: Callable[[str], Any], sample_steps: int, specs: RewardSpecs | None = None
) -> Callable[[str], dict[str, Reward]]:
    """{monitor name: reward} for a prompt: what the held-out evaluation measures besides the training reward."""
    specs = specs or RewardSpecs(frozen_generator_for, sample_steps)
    return lambda prompt: {monitor_name(spec): specs.reward(spec, prompt) for spec in cfg.monitors}


def monitor_name(spec: dict) -> str:
    """A monitor's column name: its `label`, else what it measures (the statistic, or kind:model folder)."""
    if spec.get("label"):
        return str(spec["label"])
    if spec["kind"] == "statistic":
        return str(spec["name"])
    return f"{spec['kind']}:{Path(str(spec.get('model') or spec.get('url') or spec.get('function'))).name}"


def build_policy(cfg: RLConfig) -> tuple[Policy, Any]:
    """The Policy of a config (LoRA added to the generator's network) and the underlying generator/pipeline."""
    from .lora import adapters_disabled

    out = Path(cfg.out)
    generator_for, network, base = build_generator(cfg, out)
    params = add_lora(network, LoraSpec(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets), seed=cfg.seed)
    tcfg = cfg.trainer_config()

    def frozen_generator_for(prompt: str) -> Any:
        return _Frozen(generator_for(prompt), network, adapters_disabled)

    specs = RewardSpecs(frozen_generator_for, tcfg.sample_steps)
    rewards = build_rewards(cfg, frozen_generator_for, tcfg.sample_steps, specs)
    monitors = build_monitors(cfg, frozen_generator_for, tcfg.sample_steps, specs) if cfg.monitors else None
    return Policy(generator_for, rewards, network, params, monitors_for=monitors), base


def frozen_generators(policy: Policy) -> Callable[[str], Any]:
    """The policy's generators with the LoRA switched off (the frozen model)."""
    from .lora import adapters_disabled

    return lambda prompt: _Frozen(policy.generator_for(prompt), policy.network, adapters_disabled)


class _Frozen:
    """A generator with its LoRA switched off for every call (the frozen model, for tournament references)."""

    def __init__(self, gen: Any, network: torch.nn.Module, disabled: Any):
        self.gen, self.network, self.disabled = gen, network, disabled
        self.parameterization, self.noise_shape, self.device = gen.parameterization, gen.noise_shape, gen.device

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gen, name)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with self.disabled(self.network):
            return self.gen.denoise(x, sigma)
