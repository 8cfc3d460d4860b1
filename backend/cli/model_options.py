"""The reward-model flags shared by `score` and `rerank` (loading, prompt, score, pixel budget), and the model
or `--backend` client they build."""

from __future__ import annotations

import argparse
from typing import Any

from ..devices import ATTENTION, DTYPE_CHOICES
from ..scoring.config import COT_MODES, NORMALIZATIONS
from ..scoring.judges import DEFAULT_JUDGE, JUDGES
from ..scoring.prompts import CRITERIA_PRESETS
from ..vlm.quantization import QUANTIZATIONS
from .checks import check_model_source, check_text, parse_criteria
from .errors import CLIError

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"

# The flags of the loading fields (RewardModel.from_pretrained's LOADING_FIELDS): name -> (flag, type, help).
LOADING_FLAGS: dict[str, tuple[str, type, str]] = {
    "dtype": ("--dtype", str, f"{', '.join(DTYPE_CHOICES)} (auto: bf16 on GPU, fp32 on CPU)"),
    "quantization": (
        "--quantize",
        str,
        f"{', '.join(QUANTIZATIONS)}: int8 / nf4 quantise the language model's linear layers and token tables "
        "with bitsandbytes (about 1/2 and 1/3 of a 7B judge's bf16 memory; vision tower and the answer tokens' "
        "lm_head rows kept; CUDA or CPU)",
    ),
    "device": ("--device", str, "auto, cpu, cuda, cuda:1, mps"),
    "attn_implementation": ("--attn", str, ", ".join(ATTENTION)),
    "device_map": ("--device-map", str, "'auto' to spread a large model over several GPUs"),
    "min_pixels": ("--min-pixels", int, "minimum pixels per image"),
    "max_pixels": ("--max-pixels", int, "maximum pixels per image (the main speed knob)"),
    "video_max_pixels": ("--video-max-pixels", int, "maximum pixels per video frame"),
    "max_frames": ("--max-frames", int, "maximum frames per video"),
    "fps": ("--fps", float, "video frames per second to sample"),
}
LOCAL_DEFAULTS = {
    "dtype": "auto",
    "quantization": "none",
    "device": "auto",
    "max_frames": 32,
    "fps": 2.0,
}  # loading here (score, rerank)
# With --backend the server decides these, so changing one from its default is an error.
LOCAL_ONLY = {**{name: LOCAL_DEFAULTS.get(name) for name in LOADING_FLAGS}, "max_batch_tokens": None}


def add_loading_flags(group: Any, names: list[str], defaults: dict[str, Any]) -> None:
    """Add the loading flags `names` to an argument group, with `defaults` (None where absent)."""
    for name in names:
        flag, kind, help_text = LOADING_FLAGS[name]
        default = defaults.get(name)
        shown = f" (default {default})" if default is not None and kind is not str else ""
        group.add_argument(flag, dest=name, type=kind, default=default, help=help_text + shown)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a reward model."""
    add_loading_options(p)
    add_prompt_options(p)
    add_score_options(p)
    add_pixel_options(p)


def add_loading_options(p: argparse.ArgumentParser) -> None:
    """Which model, where it runs (here or a --backend server) and how it is loaded."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help=f"checkpoint directory or hub id (default {DEFAULT_MODEL}); with --backend, a model name "
        "the server has configured (default: its default model)",
    )
    g.add_argument(
        "--backend",
        default=None,
        metavar="URL",
        help="score through a running `rewarddance serve` at URL instead of loading the model here",
    )
    g.add_argument(
        "--token",
        default=None,
        help="bearer token for --backend (default: $REWARDDANCE_TOKEN, sent only to loopback or "
        "$REWARDDANCE_TOKEN_HOSTS hosts)",
    )
    add_loading_flags(g, ["dtype", "quantization", "device", "attn_implementation", "device_map"], LOCAL_DEFAULTS)


def add_prompt_options(p: argparse.ArgumentParser) -> None:
    """How the question put to the model is worded."""
    g = p.add_argument_group("prompt")
    g.add_argument(
        "--judge",
        default=None,
        choices=tuple(JUDGES),
        help=f"judge preset: the prompts and answer reading the checkpoint was trained on (default {DEFAULT_JUDGE}; "
        "unifiedreward: CodeGoat24/UnifiedReward checkpoints, a 1-5 score / 'Image 1/2 is better' read as "
        "probabilities in [0, 1])",
    )
    g.add_argument(
        "--question", default=None, help="custom question template, e.g. 'Does this image show \"{prompt}\"?'"
    )
    g.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    add_criteria_flags(g)
    g.add_argument(
        "--cot",
        default=None,
        choices=COT_MODES,
        help="chain of thought: answer_first (reasons after the verdict) or reasoning_first",
    )
    g.add_argument("--reasons", action="store_true", help="generate and return the model's reasons")
    g.add_argument(
        "--reason-tokens", type=int, default=None, help="most tokens a reason or a reasoning may take (default 128)"
    )
    add_sampling_flags(g)


def add_sampling_flags(g: Any) -> None:
    """--samples, --temperature, --top-p and --seed: sampled reasoning-first judgements (inference-time scaling)."""
    g.add_argument(
        "--samples",
        type=int,
        default=None,
        help="k reasoning-first judgements per file (with --cot reasoning_first and --temperature > 0): the score "
        "is their mean P(yes); --json adds each file's spread (standard deviation); default 1",
    )
    g.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature of generated text (default 0: greedy)"
    )
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass with --temperature (default 1)")
    g.add_argument(
        "--seed", type=int, default=None, help="sampling seed: the same seed gives the same texts (default 0)"
    )


SAMPLING_FLAGS = {
    "reason_tokens": "--reason-tokens",
    "samples": "--samples",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "seed": "--seed",
}


def check_sampling_args(args: argparse.Namespace) -> None:
    """The generation flags make a valid scoring config with --cot (CLIError naming the flag otherwise)."""
    from ..scoring.config import ScoringConfig

    values = {name: getattr(args, name) for name in SAMPLING_FLAGS}
    if all(v is None for v in values.values()):
        return
    try:  # without --cot a checkpoint's own setting may still be reasoning_first: check only the ranges then
        ScoringConfig(cot=args.cot or "reasoning_first").with_overrides(**values)
    except ValueError as exc:
        field = str(exc).split()[0]
        raise CLIError(f"{SAMPLING_FLAGS.get(field, '--' + field)}: {exc}") from exc


def add_criteria_flags(g: Any) -> None:
    """--criteria (preset names) and --criteria-text (criteria in your own words); both may be given."""
    g.add_argument("--criteria", default=None, help=f"comma-separated criteria presets: {', '.join(CRITERIA_PRESETS)}")
    g.add_argument(
        "--criteria-text",
        default=None,
        help="criteria in your own words, e.g. 'the fox is red and has four legs' (added to --criteria's presets)",
    )


def check_model_args(args: argparse.Namespace) -> None:
    """The cheap checks of the model flags (source, attention, criteria, texts), before anything is loaded."""
    from ..devices import check_attention

    if not args.backend:
        check_model_source(args.model, "--model")
    try:
        check_attention(args.attn_implementation)
    except ValueError as exc:
        raise CLIError(f"--attn: {exc}") from exc
    check_quantize_flag(args.quantization)
    parse_criteria(args.criteria, args.criteria_text)
    check_judge_args(args)
    check_sampling_args(args)
    for flag, value in (("--question", args.question), ("--answer", args.answer), ("--negative", args.negative)):
        check_text(value, flag)


def check_judge_args(args: argparse.Namespace) -> None:
    """A judge preset asks its own question: --criteria, --criteria-text, --question and --cot cannot apply."""
    if args.judge in (None, DEFAULT_JUDGE):
        return
    flags = [
        flag
        for flag, value in (
            ("--criteria", args.criteria),
            ("--criteria-text", args.criteria_text),
            ("--question", args.question),
            ("--cot", args.cot if args.cot != "none" else None),
        )
        if value
    ]
    if flags:
        raise CLIError(
            f"--judge {args.judge} asks the checkpoint's own question, so {', '.join(flags)} cannot apply; "
            f"remove {', '.join(flags)} or use --judge {DEFAULT_JUDGE}"
        )


def check_quantize_flag(value: str | None) -> None:
    """--quantize names one of none, int8, nf4 (CLIError otherwise)."""
    from ..vlm.quantization import check_quantization

    try:
        check_quantization(value)
    except ValueError as exc:
        raise CLIError(f"--quantize: {exc}") from exc


def add_score_options(p: argparse.ArgumentParser) -> None:
    """How P("yes") is read, and the token budget of one forward."""
    g = p.add_argument_group("score")
    g.add_argument("--normalize", default=None, choices=NORMALIZATIONS, help="softmax over vocabulary or yes/no")
    g.add_argument("--answer", default=None, help="answer word whose probability is the score (default Yes)")
    g.add_argument("--negative", default=None, help="the 'no' word for --normalize yes_no (default No)")
    g.add_argument("--answer-variants", action="store_true", help="also count case/space variants of the words")
    g.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="token budget per forward (default 16384 on GPU, 1536 on CPU)",
    )


def add_pixel_options(p: argparse.ArgumentParser) -> None:
    """Image and video resolution limits (the main speed knobs)."""
    g = p.add_argument_group("pixel budget")
    add_loading_flags(g, ["min_pixels", "max_pixels", "video_max_pixels", "max_frames", "fps"], LOCAL_DEFAULTS)


def load_reward_model(args: argparse.Namespace) -> Any:
    """A RewardModel built from the options, or a client of --backend with the same methods."""
    if args.backend:
        from ..client import RewardClient

        changed = [k for k, default in LOCAL_ONLY.items() if getattr(args, k) != default]
        if changed:
            flags = ", ".join(
                LOADING_FLAGS[k][0] if k in LOADING_FLAGS else "--" + k.replace("_", "-") for k in changed
            )
            raise CLIError(
                f"{flags} set(s) how a model is loaded here; with --backend the server's operator sets "
                "them (rewarddance serve / its config file)"
            )
        return BoundClient(RewardClient(args.backend, token=args.token, model=args.model), scoring_overrides(args))
    from ..reward_model import LOADING_FIELDS, RewardModel

    loading = {name: getattr(args, name) for name in LOADING_FIELDS}
    return RewardModel.from_pretrained(args.model or DEFAULT_MODEL, **loading, **scoring_overrides(args))


class BoundClient:
    """A backend client that sends the command line's scoring options with every call (as a model keeps them)."""

    def __init__(self, client: Any, overrides: dict[str, Any]):
        self.client = client
        self.overrides = overrides

    def score(self, images: Any, prompt: Any, **kwargs: Any) -> Any:
        """Score through the backend with the command line's scoring options."""
        return self.client.score(images, prompt, **self.overrides, **kwargs)

    def compare(self, candidates: Any, reference: Any, prompt: Any, **kwargs: Any) -> Any:
        """Compare through the backend with the command line's scoring options."""
        return self.client.compare(candidates, reference, prompt, **self.overrides, **kwargs)


def scoring_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """ScoringConfig fields given on the command line."""
    names = ("question", "system", "normalize", "answer", "negative", "cot", "judge", *SAMPLING_FLAGS)
    out = {k: getattr(args, k, None) for k in names}
    if not getattr(args, "backend", None):
        out["max_batch_tokens"] = args.max_batch_tokens
    criteria = parse_criteria(args.criteria, args.criteria_text)
    if criteria:
        out["criteria"] = criteria
    if args.answer_variants:
        out["answer_variants"] = True
    return {k: v for k, v in out.items() if v is not None}
