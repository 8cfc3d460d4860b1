"""`ScoringConfig`: every knob that changes what a score means or how it is computed, validated in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from .criteria import CRITERIA_PRESETS
from .judges import DEFAULT_JUDGE, JUDGES

NORMALIZATIONS = ("vocab", "yes_no")
# Default token budgets per forward: big batches fill a GPU; on CPUs a few sequences at a time stay in
# cache (bench/score_throughput.py --quick: 1.17x at 1400 tokens vs 0.85x at 16384 on 2 cores).
GPU_BATCH_TOKENS = 16384
CPU_BATCH_TOKENS = 1536


def default_batch_tokens(device_type: str) -> int:
    """Token budget of one forward when the user sets none."""
    return GPU_BATCH_TOKENS if device_type == "cuda" else CPU_BATCH_TOKENS


COT_MODES = ("none", "answer_first", "reasoning_first")
MAX_SAMPLES = 64  # judgements per query (each costs a generation)
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class ScoringConfig:
    """How prompts are worded and how P("yes") is read. All fields can be overridden per call."""

    criteria: tuple[str, ...] = ()  # preset names (see CRITERIA_PRESETS) and/or free-form criteria text
    question: str | None = None  # custom question template; {prompt} and {criteria} are filled in
    system: str | None = None  # system prompt; None keeps the chat template's default
    normalize: str = "vocab"  # "vocab": softmax over the vocabulary; "yes_no": two-way yes/no softmax
    answer: str = "Yes"  # the word whose probability is the score
    negative: str | None = None  # the "no" word for yes_no normalisation; None derives it from `answer`
    answer_variants: bool = False  # also count case/space variants ("yes", " Yes", "YES", ...)
    cot: str = "none"  # "none", "answer_first" or "reasoning_first"
    reason_tokens: int = 128  # maximum new tokens for generated reasons / reasoning
    max_batch_tokens: int | None = None  # token budget of one forward (batch x padded length); None: by device
    prefix_reuse: bool = True  # compute a shared prefix (instruction, reference, examples) once
    min_prefix_tokens: int = 64  # shorter shared prefixes (e.g. just the system prompt) are not worth a cache
    judge: str = DEFAULT_JUDGE  # judge preset (judges.py): the prompts a checkpoint was trained on, how it is read
    # Inference-time scaling of the judge: k reasoning-first judgements per query, score = mean P(yes) over them.
    samples: int = 1  # judgements per query (k); > 1 needs cot "reasoning_first" and temperature > 0
    temperature: float = 0.0  # of generated reasoning / reasons; 0: greedy
    top_p: float = 1.0  # nucleus sampling mass (with temperature > 0); 1: the whole vocabulary
    seed: int = 0  # sampling seed: the same seed gives the same texts and scores

    def validate(self) -> ScoringConfig:
        """Raise ValueError naming the field and the fix when a value is unusable; return self."""
        if not isinstance(self.judge, str) or self.judge not in JUDGES:
            raise ValueError(f"judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if self.judge != DEFAULT_JUDGE:
            used = [
                name
                for name, off in (("criteria", ()), ("question", None), ("cot", "none"))
                if getattr(self, name) != off
            ]
            if used:
                raise ValueError(
                    f"judge {self.judge!r} asks its own question, so {', '.join(used)} cannot apply; "
                    f"remove {', '.join(used)} or use judge {DEFAULT_JUDGE!r}"
                )
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.cot not in COT_MODES:
            raise ValueError(f"cot must be one of {', '.join(COT_MODES)}, got {self.cot!r}")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise ValueError("answer must be a non-empty word such as 'Yes'")
        if self.negative is not None and (not isinstance(self.negative, str) or not self.negative.strip()):
            raise ValueError("negative must be a non-empty word such as 'No' (or None to derive it)")
        if self.max_batch_tokens is not None and (
            not isinstance(self.max_batch_tokens, int) or self.max_batch_tokens < 1
        ):
            raise ValueError(f"max_batch_tokens must be a positive integer, got {self.max_batch_tokens!r}")
        if not isinstance(self.reason_tokens, int) or self.reason_tokens < 1:
            raise ValueError(f"reason_tokens must be a positive integer, got {self.reason_tokens!r}")
        self._validate_sampling()
        if self.question is not None and (not isinstance(self.question, str) or not self.question.strip()):
            raise ValueError(
                "question must be a non-empty template string such as 'Does this image show \"{prompt}\"?'"
            )
        if self.system is not None and not isinstance(self.system, str):
            raise ValueError(f"system must be a string, got {type(self.system).__name__}")
        if not isinstance(self.criteria, tuple) or not all(isinstance(c, str) and c.strip() for c in self.criteria):
            raise ValueError("criteria must be a list of preset names or non-empty criteria texts")
        return self

    def _validate_sampling(self) -> None:
        """samples, temperature, top_p and seed: in range, and samples > 1 only where it means something."""
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or not 1 <= self.samples <= MAX_SAMPLES:
            raise ValueError(f"samples must be an integer from 1 to {MAX_SAMPLES}, got {self.samples!r}")
        if not _is_number(self.temperature) or not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(
                f"temperature must be a number from 0 (greedy) to {MAX_TEMPERATURE}, got {self.temperature!r}"
            )
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.samples > 1 and self.cot != "reasoning_first":
            raise ValueError(
                f"samples {self.samples} draws several reasoning-first judgements; set cot to 'reasoning_first' "
                "or samples to 1"
            )
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(
                f"samples {self.samples} at temperature 0 repeats one greedy judgement; set temperature > 0 "
                "(e.g. 0.7) or samples to 1"
            )

    @property
    def negative_word(self) -> str:
        """The "no" word: `negative`, or the counterpart of `answer` in the same casing."""
        if self.negative:
            return self.negative
        word = self.answer.strip()
        if word.isupper():
            return "NO"
        return "No" if word[:1].isupper() else "no"

    def with_overrides(self, **overrides: Any) -> ScoringConfig:
        """A copy with the given fields replaced (None values ignored), validated."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown scoring option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "criteria" in changes:
            changes["criteria"] = normalize_criteria(changes["criteria"])
        return replace(self, **changes).validate()


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def normalize_criteria(criteria: Any) -> tuple[str, ...]:
    """Accept a string (comma-separated presets or one free-form text), or a list; return a tuple."""
    if criteria is None:
        return ()
    if isinstance(criteria, str):
        parts = [p.strip() for p in criteria.split(",")]
        if all(p in CRITERIA_PRESETS for p in parts if p):
            return tuple(p for p in parts if p)
        return (criteria.strip(),) if criteria.strip() else ()
    if isinstance(criteria, (list, tuple)):
        return tuple(str(c).strip() for c in criteria if str(c).strip())
    raise ValueError(f"criteria must be a string or a list of strings, got {type(criteria).__name__}")
