"""The project's prompt wording: pointwise and pairwise questions (with criteria.py's presets), few-shot, chain of
thought.

A `Query` is a chat conversation whose visuals are placeholders ({"type": "image"} / {"type": "video"})
plus the visuals themselves in order of appearance; the scorer renders it with the checkpoint's own
chat template. The answer is read at the first assistant position (or after `continuation`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..media import Video, Visual, to_visual
from .config import ScoringConfig
from .criteria import CRITERIA_PRESETS, VIDEO_ONLY_PRESETS
from .judges import Judge, judge_named

VQA_QUESTION = 'Does this {kind} show "{prompt}"? Please answer yes or no.'
POINTWISE_QUESTION = (
    'The {kind} was generated from the prompt: "{prompt}"\n'
    "Judge it under these criteria:\n{criteria}\n"
    "Does the {kind} meet the criteria? Please answer yes or no."
)
PAIRWISE_QUESTION = (
    'Both {kind}s were generated from the prompt: "{prompt}"\n'
    "{kind_title} 1 is the reference and {kind} 2 is the candidate. Compare them under these criteria:\n"
    "{criteria}\n"
    "Is {kind} 2 better than {kind} 1? Please answer yes or no."
)
ANSWER_FIRST_SUFFIX = " Answer with yes or no first, then explain your judgement briefly."
REASONING_FIRST_SUFFIX = (
    " First explain your reasoning briefly, then give the verdict on the last line as "
    "'Final answer: yes' or 'Final answer: no'."
)
VERDICT_MARKER = "Final answer:"
DEFAULT_PAIRWISE_CRITERIA = ("overall",)
TEMPLATE_FIELDS = {"prompt", "criteria", "kind"}


@dataclass(eq=False)
class FewShotExample:
    """An in-context example: a visual with its verdict (True = yes), and optionally its own prompt."""

    visual: Any
    verdict: bool
    prompt: str | None = None
    reference: Any = None  # pairwise examples: the reference the visual was judged against


@dataclass(eq=False)
class Query:
    """One scoring request: chat messages with visual placeholders, the visuals, and any answer prefix."""

    messages: list[dict]
    visuals: list[Visual]
    continuation: str = ""
    pairwise: bool = False  # candidate vs reference: a text-answering judge reads its verdict tokens


def criteria_text(criteria: tuple[str, ...], kind: str) -> str:
    """Bullet list of the chosen criteria (presets expanded, free text kept as written)."""
    lines = []
    for item in criteria:
        if item in VIDEO_ONLY_PRESETS and kind != "video":
            raise ValueError(f"criteria preset {item!r} only applies to video; remove it for images")
        lines.append("- " + CRITERIA_PRESETS.get(item, item))
    return "\n".join(lines)


def fill_template(template: str, prompt: str, criteria: str, kind: str) -> str:
    """Fill {prompt}, {criteria}, {kind}; unknown {fields} are an error naming the field."""
    unknown = sorted(set(re.findall(r"{(\w*)}", template)) - TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(
            f"question template has unknown field(s) {', '.join('{' + u + '}' for u in unknown)}; "
            "use {prompt}, {criteria} and {kind}"
        )
    return (
        template.replace("{prompt}", prompt)
        .replace("{criteria}", criteria)
        .replace("{kind_title}", kind.title())
        .replace("{kind}", kind)
    )


def question_text(config: ScoringConfig, prompt: str, kind: str, pairwise: bool) -> str:
    """The user question for one query, including the chain-of-thought instruction."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    criteria = config.criteria or (DEFAULT_PAIRWISE_CRITERIA if pairwise else ())
    crit = criteria_text(criteria, kind)
    if config.question:
        template = config.question
    elif pairwise:
        template = PAIRWISE_QUESTION
    else:
        template = POINTWISE_QUESTION if criteria else VQA_QUESTION
    text = fill_template(template.replace("{kind_title}", kind.title()), prompt, crit, kind)
    if config.cot == "answer_first":
        text += ANSWER_FIRST_SUFFIX
    elif config.cot == "reasoning_first":
        text += REASONING_FIRST_SUFFIX
    return text


def _kind(visual: Visual) -> str:
    return "video" if isinstance(visual, Video) else "image"


def _system_messages(config: ScoringConfig) -> list[dict]:
    return [{"role": "system", "content": [{"type": "text", "text": config.system}]}] if config.system else []


def _example_turns(
    examples: list[FewShotExample], config: ScoringConfig, prompt: str, pairwise: bool
) -> tuple[list, list]:
    """Few-shot turns (user question + assistant verdict) and their visuals, in order."""
    messages, visuals = [], []
    for i, ex in enumerate(examples):
        if not isinstance(ex, FewShotExample):
            raise ValueError(f"few_shot[{i}] must be a FewShotExample(visual, verdict, prompt=None)")
        if pairwise and ex.reference is None:
            raise ValueError(f"few_shot[{i}] is used for pairwise scoring and needs a reference visual")
        shown = [to_visual(ex.reference, f"few_shot[{i}].reference")] if pairwise else []
        shown.append(to_visual(ex.visual, f"few_shot[{i}].visual"))
        question = question_text(replace_cot(config), ex.prompt or prompt, _kind(shown[-1]), pairwise)
        messages.append(
            {"role": "user", "content": _visual_parts(shown, pairwise) + [{"type": "text", "text": question}]}
        )
        verdict = config.answer.strip() if ex.verdict else config.negative_word
        messages.append({"role": "assistant", "content": [{"type": "text", "text": verdict}]})
        visuals.extend(shown)
    return messages, visuals


def replace_cot(config: ScoringConfig) -> ScoringConfig:
    """Examples are answered with a bare verdict, so they carry no chain-of-thought instruction."""
    return config if config.cot == "none" else config.with_overrides(cot="none")


def _visual_parts(visuals: list[Visual], pairwise: bool) -> list[dict]:
    parts: list[dict] = []
    for i, v in enumerate(visuals):
        if pairwise:
            parts.append({"type": "text", "text": f"{_kind(v).title()} {i + 1}:"})
        parts.append({"type": _kind(v)})
    return parts


def pointwise_query(visual: Visual, prompt: str, config: ScoringConfig, few_shot: list | None = None) -> Query:
    """One visual + prompt + criteria: "does it meet them?"; visual before the question."""
    judge = judge_named(config.judge)
    if not judge.own_wording:
        return judge_query(judge, [visual], prompt, config, few_shot)
    shots, shot_visuals = _example_turns(list(few_shot or []), config, prompt, pairwise=False)
    question = question_text(config, prompt, _kind(visual), pairwise=False)
    user = {"role": "user", "content": _visual_parts([visual], False) + [{"type": "text", "text": question}]}
    return Query(_system_messages(config) + shots + [user], shot_visuals + [visual])


def pairwise_query(
    reference: Visual, candidate: Visual, prompt: str, config: ScoringConfig, few_shot: list | None = None
) -> Query:
    """Image 1 = reference, image 2 = candidate, then prompt + criteria: "is image 2 better than image 1?"."""
    if _kind(reference) != _kind(candidate):
        raise ValueError("reference and candidate must both be images or both be videos")
    judge = judge_named(config.judge)
    if not judge.own_wording:
        return judge_query(judge, [reference, candidate], prompt, config, few_shot)
    shots, shot_visuals = _example_turns(list(few_shot or []), config, prompt, pairwise=True)
    question = question_text(config, prompt, _kind(candidate), pairwise=True)
    user = {
        "role": "user",
        "content": _visual_parts([reference, candidate], True) + [{"type": "text", "text": question}],
    }
    return Query(_system_messages(config) + shots + [user], shot_visuals + [reference, candidate], pairwise=True)


def judge_query(judge: Judge, visuals: list[Visual], prompt: str, config: ScoringConfig, few_shot: Any) -> Query:
    """A text-answering judge's own prompt: the visuals (reference first), its question, its answer prefix."""
    if few_shot:
        raise ValueError(f"few_shot: judge {judge.name!r} is used with its own prompt; remove few_shot")
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if any(isinstance(v, Video) for v in visuals):
        raise ValueError(f"judge {judge.name!r} scores images only; use judge 'yes_no' for videos")
    pairwise = len(visuals) == 2
    template = judge.pairwise if pairwise else judge.pointwise
    parts = [{"type": "image"} for _ in visuals] + [{"type": "text", "text": template.replace("{prompt}", prompt)}]
    prefix = judge.pairwise_prefix if pairwise else judge.pointwise_prefix
    messages = _system_messages(config) + [{"role": "user", "content": parts}]
    return Query(messages, list(visuals), continuation=prefix, pairwise=pairwise)
